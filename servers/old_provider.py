"""synapse-s3-storage-provider 1.7.0, the provider ours replaces, in a virtual environment of its
own (it pins boto3, which must not meet s3fs in ours), with matrix-synapse 1.163.2 and six, which
it imports (synapse.rest.media.v1._base) and resolve with it.

The migration test (tests/e2e/test_migration.py) runs a Synapse on it; the benchmarks (bench/run)
compare ours with it. It lives in .work/old-provider/ at the root of the checkout (git-ignored),
built once by:

    python3 -m servers.old_provider    # prints the environment's python; log in .work/old-provider/setup.log

which .ci/run and bench/run call. Only the standard library is needed to build it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRECTORY = ROOT / ".work" / "old-provider"
VENV = DIRECTORY / "venv"
PYTHON = VENV / "bin" / "python"
LOG = DIRECTORY / "setup.log"
# Written once every step below succeeded: a half-built environment is built again.
STAMP = VENV / ".installed"
REQUIREMENTS = ("synapse-s3-storage-provider==1.7.0", "matrix-synapse==1.163.2", "six")
# Its media storage provider class, as homeserver.yaml names it.
MODULE = "s3_storage_provider.S3StorageProviderBackend"


def installed() -> bool:
    return STAMP.exists()


def build(python: str = sys.executable) -> Path:
    """Build the environment with `python`'s venv unless it is there; its python."""
    if installed():
        return PYTHON
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    steps = [
        [python, "-m", "venv", "--clear", str(VENV)],
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(PYTHON), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
        [str(PYTHON), "-c", "import s3_storage_provider, synapse.rest.media.v1._base, six"],
    ]
    with LOG.open("a") as log:
        for argv in steps:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=True)
    STAMP.touch()
    return PYTHON


def main() -> int:
    if not installed():
        print(f"servers.old_provider: setting up {VENV} (log: {LOG}) ...", file=sys.stderr)
    try:
        print(build())
    except subprocess.CalledProcessError as error:
        tail = "\n".join(LOG.read_text(errors="replace").splitlines()[-30:])
        print(f"servers.old_provider: {error.cmd} failed; the end of {LOG}:\n{tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
