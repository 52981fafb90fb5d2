"""The normal/abnormal forearm classifier and its synthetic-augmentation ablation (thesis 3.2.3,
4.2, Table 2): natural X-rays, plus `synthetic.per_class` translated synthetic images per class.

    python -m xrayjax.main --config configs/classifier_forearm.py:synthetic=5000 \
        --workdir runs/cls5k
    python -m xrayjax.main --config configs/classifier_forearm.py:synthetic=5000 \
        --workdir runs/cls5k --mode evaluate [--split valid]     # the latest checkpoint only
    python -m xrayjax.tools.ablation --config configs/classifier_forearm.py \
        --synthetic 0,5000,10000 --seeds 5 --workdir runs/ablation        # Table 2 with error bars
    python -m xrayjax.main --config configs/classifier_forearm.py:data=phantom,runlocal \
        --workdir /tmp/cls    # CPU smoke run on rendered phantoms

Variants: synthetic=0|5000|10000 (images per class added), data=mura|phantom, runlocal.
data=mura trains on `mura` train and tests on `mura` valid (the thesis's test set, 150 normal +
151 abnormal), drawing synthetic images from `translated_forearm` (labelled translations made by
the per-class CycleGANs; any labelled dataset name works, several may be listed). data=phantom
uses the radiograph-style phantoms as the natural domain and the clean renders as the synthetic
source; the demo phantoms hold 800 clean training images in all, so use e.g.
`--config.synthetic.per_class=300` there.
"""

import ml_collections

from configs import common

SYNTHETIC = ("0", "5000", "10000")  # thesis Table 2: natural only, +5,000 and +10,000 per class


def get_config(arg: str | None = None):
    """The experiment's config; `arg` selects variants."""
    args = common.parse_arg(arg, synthetic=0, data="mura", runlocal=False)
    common.choose("synthetic", str(args.synthetic), SYNTHETIC)
    common.choose("data", args.data, ("mura", "phantom"))
    config = ml_collections.ConfigDict()
    config.trainer = "classifier"
    common.run_fields(config)
    if args.data == "mura":
        natural, test, synthetic = "mura:train", "mura:valid", "translated_forearm:train"
    else:
        natural = "phantom_forearm_radiograph:train"
        test = "phantom_forearm_radiograph:test"
        synthetic = "phantom_forearm_clean:train"
    config.natural = ml_collections.ConfigDict(
        {
            "train": natural,  # sec. 3.1: 1,164 normal + 661 abnormal MURA forearm images
            "test": test,  # sec. 4.2: the natural-only test set (MURA valid)
            "clahe": True,  # sec. 3.2.1: CLAHE (clip 3, 8×8 tiles) on natural images
        }
    )
    config.synthetic = ml_collections.ConfigDict(
        {
            "datasets": (synthetic,),  # "name:split", each with labels 0/1
            "per_class": int(args.synthetic),  # sec. 3.2.3: 0, 5,000 or 10,000 per class
            # Translations already look like the (CLAHE-processed) natural images they learnt.
            "clahe": False,
        }
    )
    config.image_size = 256  # sec. 3.2.1: every image 256×256
    config.load_size = 286  # random crop as in the GANs: resize to 286, crop 256 (THESIS_SPEC)
    config.rotate_deg = 20.0  # sec. 3.2.3: random rotation within ±20° (plus crop and flip)
    config.global_batch = 32  # not given in the thesis; THESIS_SPEC decides 32
    config.num_epochs = 200  # sec. 3.2.3: 200 epochs
    config.steps_per_epoch = 0  # 0: training-set size / global batch, rounded up
    config.total_steps = 0  # 0: num_epochs × steps_per_epoch
    config.model = ml_collections.ConfigDict(
        {
            "width": 10,  # fig. 32: 5×5 stem conv with n = 10 filters
            "num_modules": 6,  # fig. 32: 6 residual modules, channels doubling
            "blocks_per_module": 2,  # 4 convs with 2 skips per module
        }
    )
    config.optim = ml_collections.ConfigDict({"lr": 0.01, "b1": 0.9, "b2": 0.999})  # sec. 3.2.3
    config.bootstrap_resamples = 1000  # 95% percentile-bootstrap intervals in eval.json
    config.checkpoint_every = 500
    if args.runlocal:
        config.image_size = 32
        config.load_size = 36
        config.global_batch = 8  # divides 1, 2 or 4 devices
        config.num_epochs = 3
        config.steps_per_epoch = 4
        config.model.width = 4
        config.model.num_modules = 2
        config.workers = 0
        config.log_every = 2
        config.checkpoint_every = 4
        config.bootstrap_resamples = 200
    return config
