"""`python -m edgebuild.deploy`: the CLI. numpy's BLAS runs single-threaded here (set before numpy loads): its
matmuls are small (mask logits), and idle BLAS threads spin on the cores the interpreter needs. An explicitly set
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS wins."""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from edgebuild.deploy.cli import main  # noqa: E402

main()
