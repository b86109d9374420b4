"""The tiny float64 model and hand-built batches live with the gradient checks in the package
(``minispanbert.check_gradients``); tests import them from there or through these names."""
from minispanbert.check_gradients import CHECK_CONFIG as TINY  # noqa: F401
from minispanbert.check_gradients import encoder_inputs, hand_batch  # noqa: F401
