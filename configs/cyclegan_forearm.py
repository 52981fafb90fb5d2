"""CycleGAN between natural (A) and synthetic (B) forearm X-rays, one model per class
(thesis 3.2.2, 4.1): its G_AB turns synthetic renders into natural-looking, labelled X-rays.

    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=normal --workdir runs/cg_normal
    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=abnormal \
        --workdir runs/cg_abnormal
    python -m xrayjax.main --config configs/cyclegan_forearm.py:cls=normal,data=phantom,runlocal \
        --workdir /tmp/cg    # CPU smoke run on rendered phantoms

Variants: cls=normal|abnormal|both, data=mura|phantom, runlocal. cls=both trains one model on
every image of both classes: its translations cannot carry a per-class generator's signature,
which a classifier trained on per-class translations can learn instead of the abnormality
(`python -m xrayjax.tools.demo --preset perclass` compares the two); labels are then kept only as
far as the translation keeps the removed bone segment (GAN evaluation's label preservation
measures it).
data=mura reads `mura` (natural) and, as the synthetic domain, `phantom_forearm_clean` (point
domains.B.dataset at your own renders made with data_prep.image_folder to use those instead).
"""

from configs import common


def get_config(arg: str | None = None):
    """The experiment's config; `arg` selects variants."""
    args = common.parse_arg(arg, cls="normal", data="mura", runlocal=False)
    classes = {"normal": (0,), "abnormal": (1,), "both": ()}
    labels = classes[common.choose("cls", args.cls, tuple(classes))]
    common.choose("data", args.data, ("mura", "phantom"))
    config = common.gan_config()
    natural = "mura" if args.data == "mura" else "phantom_forearm_radiograph"
    config.domains.A = common.domain(natural, "train", clahe=True, labels=labels)
    config.domains.B = common.domain("phantom_forearm_clean", "train", labels=labels)
    if args.runlocal:
        common.shrink_gan_for_cpu(config)
    return config
