"""One module per merge method; importing this package registers them all."""

from harness.merge.methods import (  # noqa: F401
    base,
    breadcrumbs,
    dare,
    della,
    mllm,
    model_soup,
    neuron_fusion,
    task_arithmetic,
    ties,
)
