"""What one request may ask for: the caps the dashboard and the batch job share, in one place.

The engine itself (:func:`saliency_core.attribute`,
:func:`saliency_core.evaluation.faithfulness.deletion_insertion`) takes any value above
a method's minimum: a notebook may want 1,000 SmoothGrad samples and wait.
A dashboard control or a command-line option is a request from someone who
may not know that each sample is a forward and a backward pass per image,
or that ``--faithfulness-steps 100000000`` builds lists of 10^8 pixel
counts (it grew to 20.6 GB before the kernel killed it), so both stop at
the same caps: a method's parameters declare theirs (``Param.maximum``, next
to the method's code, from the constants here), and the other caps are read
from here (``pages/faithfulness.py``, :mod:`saliency_core.jobs.options`).
"""

from __future__ import annotations

#: Passes per image a method's parameter may ask for (SmoothGrad's noisy copies, Integrated Gradients' path
#: points: ``Param.maximum`` of a ``costly`` parameter): each is a forward and a backward pass (about 30 ms on the
#: 2-core CPU), so 256 of them take about 8 s an image.
MAX_PASSES = 256

#: Forward-only passes per image a perturbation method's parameter may ask for (RISE's masks, LIME's and
#: KernelSHAP's samples): a forward pass without gradients costs about a quarter of a gradient row (15 ms against
#: 60 ms on the idle 2-core CPU, EfficientNet-Lite0 at 224 px), so 4096 of them take about a minute an image.
#: RISE's paper used 4000 masks.
MAX_FORWARD_PASSES = 4096

#: A seed must fit a 32-bit signed integer (what the dashboard's number input and a link carry).
MAX_SEED = 2**31 - 1

#: Deletion/insertion steps (the Faithfulness page's slider, ``--faithfulness-steps``): 2 x steps forward passes
#: per image and map; 50 steps already perturb 2 % of the pixels at a time.
MAX_FAITHFULNESS_STEPS = 50

# The batch job's own options, which no dashboard control has.
#: Images per forward pass (``--batch-size``); SmoothGrad and Integrated Gradients run this many noisy copies
#: or path points per pass, deletion/insertion four times as many images.
MAX_BATCH_SIZE = 1024
#: DataLoader worker processes per rank (``--workers``): each is a forked copy of the job.
MAX_WORKERS = 64
#: Images per Parquet part (``--part-size``): a part's rows, and with ``--save-maps`` its maps (100 kB per map
#: at 224 px), are held in memory until it is written.
MAX_PART_SIZE = 10_000


# What the batch job reads for the localisation metrics (``--boxes``, ``--masks``): checked before the model loads.
#: A boxes CSV (ImageNet's validation boxes are about 3 MB; its training boxes about 30 MB).
MAX_BOXES_BYTES = 64 * 2**20
#: Rows of a boxes CSV, and boxes of one image (their union is the object).
MAX_BOX_ROWS = 2_000_000
MAX_BOXES_PER_IMAGE = 1_000
#: A box coordinate, in the original image's pixels (the image loader refuses above 40 MP anyway).
MAX_BOX_COORDINATE = 1_000_000
#: One mask PNG's bytes (a 40 MP one-bit mask compresses far below this).
MAX_MASK_BYTES = 16 * 2**20
