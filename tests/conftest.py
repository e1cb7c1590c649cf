import pytest
import torch

# One torch thread, as the CLI runs torch (image commands: workers with one torch thread
# each; separate and complete: one by default): OpenMP threads that spin-wait collapse when
# another process is busy (the suite took 52 s alone, 11-15 minutes beside a busy process).
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(request.param)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def matrix_with_spectrum(sigma: torch.Tensor, m: int, n: int, rng: torch.Generator) -> torch.Tensor:
    """A random m x n float64 matrix with the given singular values (made on the CPU)."""
    k = sigma.numel()
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=rng, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=rng, dtype=torch.float64))
    return (U * sigma) @ V.T


def conditioned(m: int, n: int, condition: float, rng: torch.Generator, top: float = 3.0) -> torch.Tensor:
    """Log-spaced spectrum from ``top`` down to ``top / condition``."""
    k = min(m, n)
    sigma = top * torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), k, dtype=torch.float64)
    return matrix_with_spectrum(sigma, m, n, rng)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts and ends with one torch thread: a command run in-process sets the
    threads it is given (``--threads``), and several OpenMP threads spin beside the other
    xdist worker."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
