"""MUNIT networks used within one domain: the generative model of GIT (docs/method.md, the generator).

The generator splits an image into a spatial *content* code and a small *style* vector; decoding the
content of an image with a fresh style s ~ N(0, I) changes the nuisance and keeps the class, which is what
GIT uses to augment tail classes. The layout follows Huang et al. 2018 and its reference code: reflect
padding everywhere, instance norm in the content encoder, no norm in the style encoder, AdaIN residual
blocks plus layer-normed upsampling in the decoder, a PatchGAN discriminator (optionally multi-scale).

Size rules (checked by `munit_check`, before any network is built): every 4x4 stride-2 conv with reflect
padding 1 maps a side s >= 2 to floor(s / 2), so
- the content code has side image_size / 2**n_downsample, which must be an integer (the decoder upsamples
  by exactly 2**n_downsample) and at least 2 (its 3x3 reflect-padded residual convs need a side > 1);
- the style encoder downsamples STYLE_DOWNSAMPLE = 4 times (as the reference), so images need a side >= 16;
- the discriminator's smallest scale (each extra scale: 3x3 average pool, stride 2, pad 1 -> ceil(s / 2))
  must have side >= 2**disc_layers so the last conv still yields a 1x1 patch map.
With the defaults 28, 32 and 64 px all pass (28 px: 7x7 content, 1x1 patch map; 32 px: 8x8 and 2x2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gitune.munit_defaults import MUNIT_DEFAULTS  # one place, torch-free: config reads it too

# The reference style encoder: 2 channel-doubling plus 2 more stride-2 convs, then global average pooling.
STYLE_DOWNSAMPLE = 4


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each sample's channels over (H, W), without affine: F.instance_norm's result.

    Computed as group norm with one channel per group, the same statistics: on CPU its kernels ran
    2-7x faster than F.instance_norm's (forward + backward, at the demo generator's sizes)."""
    return F.group_norm(x, x.shape[1], eps=eps)


class InstanceNorm(nn.Module):
    """instance_norm as a layer: nn.InstanceNorm2d(affine=False) without its slower kernels; no state."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.eps)


class LayerNorm(nn.Module):
    """MUNIT's layer norm: normalise each sample over (C, H, W), then a learned per-channel affine.

    That is group norm with a single group (per-channel affine included), whose CPU kernels ran about
    twice as fast as F.layer_norm followed by the affine."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, 1, self.gamma, self.beta, self.eps)


class ImageConv2d(nn.Conv2d):
    """A conv that outputs an image (at most 3 channels): the decoder's last one. Channels-last on CPU.

    oneDNN's NCHW kernels are slow for so few output channels (the demo's 16 -> 1 7x7 conv ran at
    ~4 GFLOP/s, its wide convs at ~50); channels-last ran it 1.5-1.8x faster, forward and backward, two
    layout copies included (for few *input* channels it does not help). Same weights and parameter
    names as nn.Conv2d, same result up to float rounding, NCHW output. On CUDA a plain nn.Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        cl = torch.channels_last
        out = self._conv_forward(x.contiguous(memory_format=cl), self.weight.contiguous(memory_format=cl), self.bias)
        return out.contiguous()


def _conv_block(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, norm: str = "none",
                act: str = "relu") -> nn.Sequential:
    """Reflect pad -> conv -> norm ("in", "ln", "none") -> activation ("relu", "lrelu", "tanh", "none")."""
    conv = ImageConv2d if out_ch <= 3 else nn.Conv2d
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad), conv(in_ch, out_ch, kernel, stride)]
    if norm == "in":
        layers.append(InstanceNorm())
    elif norm == "ln":
        layers.append(LayerNorm(out_ch))
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "lrelu":
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    elif act == "tanh":
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """x + (conv3x3-IN-ReLU-conv3x3-IN)(x): the content encoder's residual block."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_block(dim, dim, 3, 1, 1, "in", "relu"),
                                  _conv_block(dim, dim, 3, 1, 1, "in", "none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def adain(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance-normalise x, then apply a per-sample, per-channel affine (N x C each) given by the style.

    As in the reference, the MLP output is used as the scale directly (not 1 + scale)."""
    x = instance_norm(x, eps)
    return x * scale[:, :, None, None] + shift[:, :, None, None]


class AdaResBlock(nn.Module):
    """Residual block whose two instance norms take their affine from the style (AdaIN)."""

    n_adain = 2

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1, self.conv1 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3)
        self.pad2, self.conv2 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3)

    def forward(self, x: torch.Tensor, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        out = F.relu(adain(self.conv1(self.pad1(x)), *params[0]))
        out = adain(self.conv2(self.pad2(out)), *params[1])
        return x + out


def _mlp(in_dim: int, hidden: int, out_dim: int, n_layers: int) -> nn.Sequential:
    """n_layers linear layers with ReLU between them (none after the last)."""
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _kaiming_init(module: nn.Module) -> None:
    """The reference 'kaiming' init: kaiming-normal (fan_in, a=0) conv/linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _gaussian_init(module: nn.Module, std: float = 0.02) -> None:
    """The reference 'gaussian' init, which MUNIT's trainer applies to its discriminators."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MunitGenerator(nn.Module):
    """Content encoder, style encoder and AdaIN decoder; images in [-1, 1], N x C x H x W."""

    def __init__(self, in_channels: int, dim: int = 64, style_dim: int = 8, n_downsample: int = 2, n_res: int = 4,
                 mlp_dim: int = 256, mlp_layers: int = 3) -> None:
        super().__init__()
        if mlp_layers < 1:
            raise ValueError(f"generator.mlp_layers: must be >= 1 (got {mlp_layers})")
        self.in_channels = in_channels
        self.style_dim = style_dim

        # Content encoder.
        layers: list[nn.Module] = [_conv_block(in_channels, dim, 7, 1, 3, "in")]
        ch = dim
        for _ in range(n_downsample):
            layers.append(_conv_block(ch, ch * 2, 4, 2, 1, "in"))
            ch *= 2
        layers += [ResBlock(ch) for _ in range(n_res)]
        self.content_encoder = nn.Sequential(*layers)
        content_ch = ch

        # Style encoder (no norm: the style is exactly what normalisation would remove).
        layers = [_conv_block(in_channels, dim, 7, 1, 3)]
        ch = dim
        for i in range(STYLE_DOWNSAMPLE):
            out = ch * 2 if i < 2 else ch
            layers.append(_conv_block(ch, out, 4, 2, 1))
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, style_dim, 1)]
        self.style_encoder = nn.Sequential(*layers)

        # Decoder: AdaIN residual blocks, then upsampling blocks with layer norm.
        self.dec_res = nn.ModuleList([AdaResBlock(content_ch) for _ in range(n_res)])
        self._adain_channels = [content_ch] * (AdaResBlock.n_adain * n_res)
        self.mlp = _mlp(style_dim, mlp_dim, 2 * sum(self._adain_channels), mlp_layers)
        layers = []
        ch = content_ch
        for _ in range(n_downsample):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(ch, ch // 2, 5, 1, 2, "ln")]
            ch //= 2
        layers.append(_conv_block(ch, in_channels, 7, 1, 3, "none", "tanh"))
        self.dec_up = nn.Sequential(*layers)

        _kaiming_init(self)

    def encode_content(self, x: torch.Tensor) -> torch.Tensor:
        """Content code only: the cheap path for augmentation, which draws the style at random."""
        return self.content_encoder(x)

    def encode_style(self, x: torch.Tensor) -> torch.Tensor:
        """Style code, N x style_dim x 1 x 1."""
        return self.style_encoder(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_content(x), self.encode_style(x)

    def _adain_params(self, style: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Split the MLP output into one (scale, shift) pair per AdaIN layer, as the reference orders it."""
        params = self.mlp(style.flatten(1))
        out = []
        for ch in self._adain_channels:
            shift, scale = params[:, :ch], params[:, ch:2 * ch]
            out.append((scale, shift))
            params = params[:, 2 * ch:]
        return out

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] from a content code and a style code (N x style_dim [x 1 x 1])."""
        params = self._adain_params(style)
        x = content
        for i, block in enumerate(self.dec_res):
            x = block(x, params[AdaResBlock.n_adain * i:AdaResBlock.n_adain * (i + 1)])
        return self.dec_up(x)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x re-rendered with `style`: decode(encode_content(x), style)."""
        return self.decode(self.encode_content(x), style)

    def random_style(self, n: int, device: torch.device | str | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """n styles from N(0, I), shape n x style_dim x 1 x 1, drawn with `generator` so callers own the RNG.

        The draw happens on the generator's device (so a CPU generator gives the same styles whatever
        `device` is) and is then moved to `device`."""
        draw_device = generator.device if generator is not None else device
        s = torch.randn(n, self.style_dim, 1, 1, generator=generator, device=draw_device)
        return s.to(device) if device is not None else s


class MunitDiscriminator(nn.Module):
    """PatchGAN (least-squares GAN): one patch map of real/fake scores per scale."""

    def __init__(self, in_channels: int, dim: int = 64, n_layers: int = 4, num_scales: int = 1) -> None:
        super().__init__()
        self.num_scales = num_scales
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.nets = nn.ModuleList([self._make_net(in_channels, dim, n_layers) for _ in range(num_scales)])
        _gaussian_init(self)

    @staticmethod
    def _make_net(in_channels: int, dim: int, n_layers: int) -> nn.Sequential:
        layers: list[nn.Module] = [_conv_block(in_channels, dim, 4, 2, 1, "none", "lrelu")]
        ch = dim
        for _ in range(n_layers - 1):
            layers.append(_conv_block(ch, ch * 2, 4, 2, 1, "none", "lrelu"))
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, net in enumerate(self.nets):
            if i > 0:
                x = self.downsample(x)
            outs.append(net(x))
        return outs


def _munit_cfg(cfg: dict) -> dict:
    unknown = sorted(set(cfg) - set(MUNIT_DEFAULTS))
    if unknown:
        raise ValueError(f"generator.{unknown[0]}: unknown key (expected one of: {', '.join(MUNIT_DEFAULTS)})")
    return {**MUNIT_DEFAULTS, **cfg}


def munit_check(cfg: dict, image_size: int, prefix: str = "generator") -> str | None:
    """The one-line error for a config that cannot work at `image_size`, or None; builds nothing.

    Lets config validation reject a bad sweep before Ray starts. Keys are reported as `prefix.key`."""
    try:
        full = _munit_cfg(cfg)
    except ValueError as err:
        return str(err).replace("generator.", f"{prefix}.", 1)
    for key, value in full.items():
        low = 0 if key == "n_downsample" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"{prefix}.{key}: expected an integer >= {low} (got {value!r})"
    n_down, factor = full["n_downsample"], 2 ** full["n_downsample"]
    if image_size % factor:
        return (f"{prefix}.n_downsample: {image_size} px images need image_size divisible by 2**n_downsample "
                f"= {factor} (got n_downsample {n_down})")
    if image_size // factor < 2:
        return (f"{prefix}.n_downsample: {image_size} px images give a {image_size // factor}x"
                f"{image_size // factor} content code with n_downsample {n_down}; need at least 2x2")
    if image_size < 2 ** STYLE_DOWNSAMPLE:
        return (f"{prefix}: the style encoder downsamples {STYLE_DOWNSAMPLE} times and needs images of at least "
                f"{2 ** STYLE_DOWNSAMPLE} px (got {image_size})")
    side = image_size
    for _ in range(full["disc_scales"] - 1):
        side = (side + 1) // 2  # 3x3 average pool, stride 2, padding 1
    layers = full["disc_layers"]
    if side < 2 ** layers:
        key = "disc_scales" if image_size >= 2 ** layers else "disc_layers"
        return (f"{prefix}.{key}: the discriminator's smallest scale is {side} px, too small for "
                f"disc_layers={layers} stride-2 convs (needs at least {2 ** layers} px; "
                f"image_size {image_size}, disc_scales {full['disc_scales']})")
    return None


def build_munit(cfg: dict, in_channels: int, image_size: int) -> tuple[MunitGenerator, MunitDiscriminator]:
    """Generator and discriminator from a `generator` config section (missing keys take MUNIT_DEFAULTS).

    Raises ValueError (one line, naming the key) when the sizes cannot work at `image_size`."""
    error = munit_check(cfg, image_size)
    if error:
        raise ValueError(error)
    c = _munit_cfg(cfg)
    gen = MunitGenerator(in_channels, dim=c["dim"], style_dim=c["style_dim"], n_downsample=c["n_downsample"],
                         n_res=c["n_res"], mlp_dim=c["mlp_dim"], mlp_layers=c["mlp_layers"])
    dis = MunitDiscriminator(in_channels, dim=c["disc_dim"], n_layers=c["disc_layers"], num_scales=c["disc_scales"])
    return gen, dis
