"""FftConv1d: a fixed-weight, stride-1 ``conv1d`` (torch's cross-correlation) computed as a product of spectra.

Why: a convolution with many input channels and a long kernel on a short input costs far fewer operations as
spectra multiplied channel by channel than as sliding dot products. CREPE's second block (128 channels in, 16 out,
64 taps, 191 samples per frame) is 4.3 GFLOP per 128 frames directly and about 0.3 GFLOP this way, and runs about
3x faster on one CPU core (bench/results/f0-vad.md, "CREPE's middle blocks by FFT").

Reads and writes nothing; needs torch. The output equals ``F.conv1d(h, weight, bias)`` to float32 rounding
(relative error about 1e-6 of the output's scale), not bit for bit, and is deterministic on one machine. The
weight's spectrum is computed once per input length and kept.
"""

from __future__ import annotations

from typing import Any


def fft_size(length: int) -> int:
    """The smallest 2^a * 3^b >= ``length``: a circular convolution that long has no wrap-around in the outputs a
    cross-correlation keeps (positions kernel-1 .. length-1 of the full convolution with the flipped kernel)."""
    best = 1 << max(0, (length - 1).bit_length())
    three = 1
    while three < best:
        two = three
        while two < length:
            two *= 2
        best = min(best, two)
        three *= 3
    return best


class FftConv1d:
    """``weight`` (out, in, taps) and ``bias`` (out,), float32 tensors; call with a padded (batch, in, length)
    float32 tensor to get the (batch, out, length - taps + 1) cross-correlation plus bias."""

    def __init__(self, weight: Any, bias: Any) -> None:
        import torch

        if weight.dim() != 3 or weight.dtype != torch.float32:
            raise ValueError(f"FftConv1d needs a float32 (out, in, taps) weight, not {tuple(weight.shape)} "
                             f"{weight.dtype}")
        self.weight = weight.detach().contiguous()
        self.bias = bias.detach().reshape(-1, 1).contiguous()
        self.taps = int(weight.shape[-1])
        self._spectra: dict[int, Any] = {}

    def _spectrum(self, n: int) -> Any:
        """The flipped kernel's spectrum as (bins, in, out), ready for a batched matrix product per bin."""
        import torch

        if n not in self._spectra:
            flipped = torch.flip(self.weight, dims=[2]).to(torch.float64)
            self._spectra[n] = torch.fft.rfft(flipped, n=n).permute(2, 1, 0).to(torch.complex64).contiguous()
        return self._spectra[n]

    def __call__(self, h: Any) -> Any:
        import torch

        length = int(h.shape[-1])
        if length < self.taps:
            raise ValueError(f"FftConv1d: input length {length} is shorter than the kernel ({self.taps} taps)")
        n = fft_size(length)
        spectrum = self._spectrum(n)
        product = torch.matmul(torch.fft.rfft(h, n=n).permute(2, 0, 1), spectrum)  # (bins, batch, out)
        full = torch.fft.irfft(product.permute(1, 2, 0), n=n)  # (batch, out, n)
        return full[..., self.taps - 1:length] + self.bias
