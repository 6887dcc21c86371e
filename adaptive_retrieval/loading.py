"""Loading a model's weights into an :class:`adaptive_retrieval.encoder.Encoder`: the transformer and
tokenizer through transformers, a LoRA adapter merged through peft, the coarse heads and the
sentence-transformers settings that :func:`adaptive_retrieval.models.locate_model` found.
``Encoder.from_pretrained`` is :func:`from_pretrained`."""

from __future__ import annotations

import logging
import os
from typing import Any

from .backbones import SUPPORTED_MODEL_TYPES
from .errors import InvalidArgument
from .models import locate_model
from .views import Pooling

logger = logging.getLogger(__name__)


def from_pretrained(
    cls: Any,
    name_or_path: str | os.PathLike[str],
    *,
    pooling: Pooling | None = None,
    max_length: int | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    **kwargs: Any,
) -> Any:
    """Load a named offline model (``minilm-l6``, ``mpnet-base``), a Hugging Face model directory, a
    sentence-transformers model directory or a Hugging Face id (:func:`adaptive_retrieval.models.locate_model`
    finds its files).

    Args:
        name_or_path: the name (``adaptive_retrieval.NAMED_MODELS``), directory or hub id.
        pooling, max_length: override what the model's own config says.
        query_prompt, document_prompt: default the model's own sentence-transformers prompts (E5's
            ``"query: "`` / ``"passage: "``, BGE's query instruction); ``""`` turns one off.
        **kwargs: go on to :class:`adaptive_retrieval.Encoder` (``device``, ``batch_size``, ...).

    Returns:
        The encoder, with the model's coarse heads (a named model's own, or saved beside the weights).

    Raises:
        ModelNotFound: a name, directory or hub id that cannot be resolved here.
        InstallationError: a named model's parts missing or damaged.
        InvalidArgument: an unsupported model type, or a bad option or sentence-transformers config.

    Example:
        >>> encoder = Encoder.from_pretrained("minilm-l6", device="cpu")  # doctest: +SKIP
        >>> encoder.encode("a query", ["3x128"])["3x128"].shape  # doctest: +SKIP
        (128,)
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    found = locate_model(name_or_path)
    config = AutoConfig.from_pretrained(found.model_dir)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidArgument(
            f"model={str(name_or_path)!r} has model type {config.model_type!r}, which is not supported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    st = found.settings
    if pooling is None and "pooling" not in st:
        logger.info("%s has no sentence-transformers pooling config; using mean pooling", found.path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list the pooler we leave out on purpose
    try:  # views never use the pooler head; do not build it (it would be random where the checkpoint lacks it)
        model = AutoModel.from_pretrained(found.model_dir, add_pooling_layer=False)
    except TypeError:  # architectures without a pooler take no such argument
        model = AutoModel.from_pretrained(found.model_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(found.model_dir)
    if found.adapter is not None:
        import warnings

        from peft import PeftModel

        # peft calls a property transformers 5 deprecates; not the user's concern
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(found.adapter)).merge_and_unload()
    return cls(
        model,
        tokenizer,
        pooling=pooling or st.get("pooling", "mean"),
        max_length=max_length if max_length is not None else st.get("max_length"),
        name=found.name,
        heads=found.heads,
        query_prompt=st.get("query_prompt", "") if query_prompt is None else query_prompt,
        document_prompt=st.get("document_prompt", "") if document_prompt is None else document_prompt,
        **kwargs,
    )
