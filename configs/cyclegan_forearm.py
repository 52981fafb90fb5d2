"""CycleGAN between natural (A) and synthetic (B) forearm X-rays, one model per class
(thesis 3.2.2, 4.1): its G_AB turns synthetic renders into natural-looking, labelled X-rays.

    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=normal --workdir runs/cg_normal
    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=abnormal \
        --workdir runs/cg_abnormal
    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=normal,data=phantom,runlocal \
        --workdir /tmp/cg    # CPU smoke run on rendered phantoms

Variants: cls=normal|abnormal, data=mura|phantom, runlocal. data=mura reads `mura` (natural)
and, as the synthetic domain, `phantom_forearm_clean` (point domains.B.dataset at your own
renders made with data_prep.image_folder to use those instead).
"""

from configs import common


def get_config(arg: str | None = None):
    """The experiment's config; `arg` selects variants."""
    args = common.parse_arg(arg, cls="normal", data="mura", runlocal=False)
    label = {"normal": 0, "abnormal": 1}[common.choose("cls", args.cls, ("normal", "abnormal"))]
    common.choose("data", args.data, ("mura", "phantom"))
    config = common.gan_config()
    natural = "mura" if args.data == "mura" else "phantom_forearm_radiograph"
    config.domains.A = common.domain(natural, "train", clahe=True, labels=(label,))
    config.domains.B = common.domain("phantom_forearm_clean", "train", labels=(label,))
    if args.runlocal:
        common.shrink_gan_for_cpu(config)
    return config
