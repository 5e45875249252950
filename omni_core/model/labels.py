"""``IGNORE_INDEX``: the label of a token the loss skips (prompt, padding, media placeholders).

The processor writes it where a token is not part of an assistant turn, the collators pad ``labels`` with it,
and the model, the loss filter and the evaluation select supervised tokens as ``labels != IGNORE_INDEX``.
It is ``torch.nn.functional.cross_entropy``'s default ``ignore_index``, so HF code agrees. Plain Python: any
module imports it without torch.
"""
IGNORE_INDEX = -100
