"""Plain records that every reader returns; no TensorFlow here."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image.

    Attributes:
        image_ref: path of the image file (or a row key for precomputed features).
        caption: the raw sentence.
        image_id: integer id of the image, unique within the dataset.
        split: ``train``, ``val``, ``test`` or ``restval``.
        category: optional class label of the image (for MAP and annotation).
    """

    image_ref: str
    caption: str
    image_id: int
    split: str
    category: str = ""


@dataclasses.dataclass(frozen=True)
class RetrievalSplit:
    """A split arranged for retrieval: distinct images, and captions pointing at them.

    Attributes:
        image_refs: one entry per distinct image, ``[N]``.
        image_ids: dataset ids of those images, ``[N]``.
        categories: category of each image, ``[N]`` (empty strings when unknown).
        captions: every caption, ``[M]``.
        caption_to_image: index into ``image_refs`` for each caption, ``[M]``.
    """

    image_refs: tuple[str, ...]
    image_ids: tuple[int, ...]
    categories: tuple[str, ...]
    captions: tuple[str, ...]
    caption_to_image: tuple[int, ...]

    @property
    def num_images(self) -> int:
        return len(self.image_refs)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def head(self, max_images: int) -> RetrievalSplit:
        """The first ``max_images`` images and their captions."""
        if max_images >= self.num_images:
            return self
        keep = [i for i, image in enumerate(self.caption_to_image) if image < max_images]
        return RetrievalSplit(
            image_refs=self.image_refs[:max_images],
            image_ids=self.image_ids[:max_images],
            categories=self.categories[:max_images],
            captions=tuple(self.captions[i] for i in keep),
            caption_to_image=tuple(self.caption_to_image[i] for i in keep),
        )

    def without_images(self, positions: Sequence[int]) -> RetrievalSplit:
        """The split less the images at ``positions`` and all their captions; the kept
        captions point at the kept images' new rows."""
        dropped = set(positions)
        if not dropped:
            return self
        kept = [index for index in range(self.num_images) if index not in dropped]
        new_row = {old: new for new, old in enumerate(kept)}
        captions = [i for i, image in enumerate(self.caption_to_image) if image not in dropped]
        return RetrievalSplit(
            image_refs=tuple(self.image_refs[i] for i in kept),
            image_ids=tuple(self.image_ids[i] for i in kept),
            categories=tuple(self.categories[i] for i in kept),
            captions=tuple(self.captions[i] for i in captions),
            caption_to_image=tuple(new_row[self.caption_to_image[i]] for i in captions),
        )


def group_by_image(records: Sequence[CaptionRecord]) -> RetrievalSplit:
    """Arranges caption records as distinct images plus a caption -> image index.

    Images keep the order in which they first appear.
    """
    index_of: dict[int, int] = {}
    image_refs: list[str] = []
    image_ids: list[int] = []
    categories: list[str] = []
    captions: list[str] = []
    caption_to_image: list[int] = []
    for record in records:
        if record.image_id not in index_of:
            index_of[record.image_id] = len(image_refs)
            image_refs.append(record.image_ref)
            image_ids.append(record.image_id)
            categories.append(record.category)
        captions.append(record.caption)
        caption_to_image.append(index_of[record.image_id])
    return RetrievalSplit(
        tuple(image_refs), tuple(image_ids), tuple(categories), tuple(captions), tuple(caption_to_image)
    )
