"""Multi-cycleGAN on forearms (thesis 3.2.4, 4.3): natural X-rays (A), synthetic X-rays (B) and
bone masks of the synthetic images (C). Segmentation of a natural image a: G_CB(a) (eq. 67,
better on MURA forearms) or G_CB(G_BA(a)) (eq. 66).

    python -m xrayjax.main --config configs/multicyclegan_forearm.py --workdir runs/mcg_forearm
    python -m xrayjax.main --config configs/multicyclegan_forearm.py:data=phantom,runlocal \
        --workdir /tmp/mcg

Variants: data=mura|phantom, runlocal.
"""

from configs import common


def get_config(arg: str | None = None):
    """The experiment's config; `arg` selects variants."""
    args = common.parse_arg(arg, data="mura", runlocal=False)
    common.choose("data", args.data, ("mura", "phantom"))
    natural = "mura" if args.data == "mura" else "phantom_forearm_radiograph"
    config = common.multicyclegan_config(natural, "phantom_forearm_clean")
    if args.runlocal:
        common.shrink_gan_for_cpu(config)
    return config
