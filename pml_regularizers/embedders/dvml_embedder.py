"""DVML embedder: class center, intra-class variation and a feature decoder on the trunk output."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from .. import functional as F
from .._arguments import is_positive_int
from .._autocast import autocast_off
from .._checks import check_finite


class DVMLOutput(NamedTuple):
    """Everything one DVML training step needs from the embedder (see
    :meth:`DVMLEmbedder.forward`)."""

    invariant: Tensor
    """:math:`z_I`, shape ``(B, D)``: the class-center embedding, the one used at test time."""
    mu: Tensor
    """Mean of the intra-class variation :math:`z_V`, shape ``(B, D)``."""
    logvar: Tensor
    """Log-variance of the intra-class variation :math:`z_V`, shape ``(B, D)``."""
    samples: Tensor
    """Synthetic embeddings :math:`\\hat z_{i,t} = z_{I,i} + \\mu_i + \\sigma_i\\epsilon_{i,t}`, shape
    ``(B * T, D)``, source-major (row ``i * T + t``)."""
    reconstruction: Tensor
    """The decoder's reconstruction of the trunk feature from each synthetic embedding, shape
    ``(B * T, in_features)``, in the same row order as ``samples``."""


class DVMLEmbedder(nn.Module):
    """The embedder of Deep Variational Metric Learning: three heads and a decoder.

    On a trunk feature :math:`x` three linear heads give the intra-class invariant (class-center)
    embedding :math:`z_I`, and the mean :math:`\\mu` and log-variance :math:`\\log\\sigma^2` of
    the intra-class variation :math:`z_V \\sim \\mathcal N(\\mu, \\sigma^2)`. Synthetic embeddings
    add a draw of the variation to the sample's own center,

    .. math::

        \\hat z_{i,t} = z_{I,i} + \\mu_i + \\sigma_i \\odot \\epsilon_{i,t}, \\qquad
        \\epsilon_{i,t} \\sim \\mathcal N(0, I), \\quad t = 1, \\dots, T,

    and the decoder maps each one back to the trunk feature space,
    :math:`\\hat x_{i,t} = W_2 \\tanh(W_1 \\hat z_{i,t} + b_1) + b_2`.

    Source: Lin, Duan, Gu, Zhou and Lu, "Deep Variational Metric Learning", ECCV 2018. Published:
    the three heads on the trunk feature, the sampling rule above, a decoder of two fully
    connected layers (512 then the feature width) with tanh that reconstructs the trunk feature,
    and :math:`z_I` as the test-time embedding. Reconstructed here: the heads are single linear
    layers; tanh sits between the two decoder layers (the output layer is linear, so that
    unbounded trunk features can be reconstructed); the hidden width defaults to the embedding
    size (512 at the paper's sizes).

    Parameters
    ----------
    in_features : int
        Width of the trunk feature :math:`x` (1024 for the paper's GoogLeNet).
    out_features : int
        Embedding size :math:`D` of :math:`z_I`, :math:`\\mu`, :math:`\\log\\sigma^2` (512 in
        the paper).
    decoder_hidden : int, optional
        Width of the decoder's hidden layer; ``out_features`` by default. The paper's decoder has
        512 hidden units with its 512-d embedding, so both readings (512, or the embedding size)
        give the paper's decoder at the paper's sizes.

    Notes
    -----
    Calling the module with the trunk feature alone, ``embedder(x)``, returns :math:`z_I`, one
    ``(B, D)`` tensor, in train and eval mode alike: PML testers, subset-batch miners and any
    code that treats the embedder as a plain ``nn.Module`` work unchanged. The training step calls
    ``embedder(x, num_samples=T, detach_decoder_input=...)`` and gets a :class:`DVMLOutput`;
    going through ``forward`` keeps the module usable inside ``DistributedDataParallel``.

    The module computes in its parameters' dtype: trunk features of another dtype (bfloat16 from
    a trunk under autocast, say) are cast to it, autocast is turned off inside, and every output
    is in the parameters' dtype, so the log-variance and the divergence built on it keep their
    precision.
    """

    def __init__(self, in_features: int, out_features: int, decoder_hidden: int | None = None) -> None:
        super().__init__()
        if decoder_hidden is None:
            decoder_hidden = out_features
        for name, value in [
            ("in_features", in_features),
            ("out_features", out_features),
            ("decoder_hidden", decoder_hidden),
        ]:
            if not is_positive_int(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.decoder_hidden = decoder_hidden
        # one matrix for the three heads: rows [z_I | mu | log sigma^2]
        self.heads = nn.Linear(in_features, 3 * out_features)
        self.decoder = nn.Sequential(
            nn.Linear(out_features, decoder_hidden),
            nn.Tanh(),
            nn.Linear(decoder_hidden, in_features),
        )

    def forward(
        self,
        x: Tensor,
        num_samples: int | None = None,
        detach_decoder_input: bool = False,
        noise: Tensor | None = None,
    ) -> Tensor | DVMLOutput:
        """The test-time embedding, or the whole DVML step.

        Parameters
        ----------
        x : Tensor
            Trunk features, shape ``(B, in_features)``.
        num_samples : int, optional
            Without it, return :math:`z_I` only. With it (:math:`T \\ge 1`), draw ``T`` synthetic
            embeddings per row, decode them and return a :class:`DVMLOutput`.
        detach_decoder_input : bool
            Feed the decoder detached synthetic embeddings, so the reconstruction's gradient
            reaches the decoder only (DVML's first phase).
        noise : Tensor, optional
            The standard normal draws, shape ``(B, T, D)``; ``torch.randn`` when omitted.

        Returns
        -------
        Tensor or DVMLOutput
            :math:`z_I` of shape ``(B, out_features)``, or a :class:`DVMLOutput`.
        """
        self._check_features(x)
        if num_samples is None:
            if noise is not None:
                raise ValueError("noise needs num_samples")
            d = self.out_features
            with autocast_off(x):
                h = x.to(self.heads.weight.dtype)
                invariant = nn.functional.linear(h, self.heads.weight[:d], self.heads.bias[:d])
            check_finite(type(self).__name__, {"x": x}, [invariant])
            return invariant
        inputs = {"x": x} if noise is None else {"x": x, "noise": noise}
        with autocast_off(x):
            invariant, mu, logvar = self._encode(x)
            samples = F.reparameterized_samples(invariant, mu, logvar, num_samples, noise)
            decoder_input = samples.detach() if detach_decoder_input else samples
            out = DVMLOutput(invariant, mu, logvar, samples, self.decoder(decoder_input))
        check_finite(type(self).__name__, inputs, [*out, logvar.exp()])
        return out

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:math:`(z_I, \\mu, \\log\\sigma^2)` of trunk features ``x``, each ``(B, D)``."""
        self._check_features(x)
        with autocast_off(x):
            out = self._encode(x)
        check_finite(f"{type(self).__name__}.encode", {"x": x}, [*out, out[2].exp()])
        return out

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        invariant, mu, logvar = self.heads(x.to(self.heads.weight.dtype)).chunk(3, dim=1)
        return invariant, mu, logvar

    def sample(
        self,
        invariant: Tensor,
        mu: Tensor,
        logvar: Tensor,
        num_samples: int,
        noise: Tensor | None = None,
    ) -> Tensor:
        """``num_samples`` synthetic embeddings per row,
        :math:`\\hat z_{i,t} = z_{I,i} + \\mu_i + \\sigma_i\\epsilon_{i,t}`.

        Parameters
        ----------
        invariant, mu, logvar : Tensor
            Outputs of :meth:`encode`, shape ``(B, D)`` each.
        num_samples : int
            :math:`T \\ge 1`.
        noise : Tensor, optional
            :math:`\\epsilon`, shape ``(B, T, D)``; ``torch.randn`` when omitted.

        Returns
        -------
        Tensor
            Shape ``(B * T, D)``, source-major: row ``i * T + t`` is draw ``t`` of row ``i`` and
            carries row ``i``'s label.
        """
        shape = tuple(mu.shape)
        if mu.ndim != 2 or shape[1] != self.out_features:
            raise ValueError(f"mu must have shape (B, {self.out_features}), got {shape}")
        if tuple(invariant.shape) != shape:
            raise ValueError(f"invariant must have mu's shape {shape}, got {tuple(invariant.shape)}")
        samples = F.reparameterized_samples(invariant, mu, logvar, num_samples, noise)
        inputs = {"invariant": invariant, "mu": mu, "logvar": logvar}
        if noise is not None:
            inputs["noise"] = noise
        check_finite(f"{type(self).__name__}.sample", inputs, [samples])
        return samples

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruct trunk features from embeddings ``z`` of shape ``(N, out_features)``."""
        if z.ndim != 2 or z.shape[1] != self.out_features:
            raise ValueError(f"z must have shape (N, out_features={self.out_features}), got {tuple(z.shape)}")
        with autocast_off(z):
            out = self.decoder(z.to(self.heads.weight.dtype))
        check_finite(f"{type(self).__name__}.decode", {"z": z}, [out])
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, decoder_hidden={self.decoder_hidden}"

    def _check_features(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"x must be trunk features of shape (B, in_features={self.in_features}), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"x must have a floating-point dtype, got {x.dtype}")
