"""Names of the write-ups cifarlab reproduces, in words, for anything a user reads."""

from __future__ import annotations


# The write-ups the faithful models and the reference recipes come from, named in words
# wherever a user reads them (``plain_words``).
WRITE_UPS = {
    "five-classic-cnns": "the Keras tutorial comparing five classic CNNs on CIFAR-10",
    "colab-inception-v1": "the Colab notebook's small Inception-v1",
    "keras-deep-cnn": "the Keras deep-CNN tutorial",
    "inception-v3-cifar": "the Inception-v3-on-CIFAR-10 write-up",
}


def plain_words(text: str) -> str:
    """``text`` with each write-up's short name replaced by its name in words."""
    for slug, words in WRITE_UPS.items():
        text = text.replace(f"the {slug} net", words)
        text = text.replace(f"modern form of {slug} ", f"modern form of {words}: ")
        text = text.replace(f"modern form of the {slug} ", f"modern form of {words}: ")
        text = text.replace(f"the {slug} notebook", words).replace(f"the {slug} settings", f"the settings of {words}")
        text = text.replace(f"{slug}: ", f"{words}: ").replace(slug, words)
    return text
