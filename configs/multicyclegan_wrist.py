"""Multi-cycleGAN on wrists (thesis 3.2.4, 4.3): natural hand X-rays (A, RSNA Bone Age),
synthetic X-rays (B) and bone masks of the synthetic images (C). Segmentation of a natural
image a: G_CB(a) (eq. 67) or G_CB(G_BA(a)) (eq. 66, better on RSNA wrists).

    python -m xrayjax.main --config configs/multicyclegan_wrist.py --workdir runs/mcg_wrist
    python -m xrayjax.main --config configs/multicyclegan_wrist.py:data=phantom,runlocal \
        --workdir /tmp/mcg

Variants: data=rsna|phantom, runlocal.
"""

from configs import common


def get_config(arg: str | None = None):
    """The experiment's config; `arg` selects variants."""
    args = common.parse_arg(arg, data="rsna", runlocal=False)
    common.choose("data", args.data, ("rsna", "phantom"))
    natural = "rsna_boneage" if args.data == "rsna" else "phantom_wrist_radiograph"
    config = common.multicyclegan_config(natural, "phantom_wrist_clean")
    if args.runlocal:
        common.shrink_gan_for_cpu(config)
    return config
