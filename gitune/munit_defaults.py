"""The MUNIT architecture defaults, in one place and without torch.

`gitune.models.munit` builds the networks from them and `gitune.config` declares the `generator.*` size keys
with them as defaults; neither copies the numbers. (A module of its own because importing anything under
`gitune.models` imports torch, and the config layer must stay importable without it.)
"""

MUNIT_DEFAULTS = {"dim": 64, "style_dim": 8, "n_downsample": 2, "n_res": 4, "mlp_dim": 256, "mlp_layers": 3,
                  "disc_dim": 64, "disc_layers": 4, "disc_scales": 1}
