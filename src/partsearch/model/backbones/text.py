"""The text backbones: BERT [paper] (any transformers encoder) and the open_clip text tower [ours].
Each gives all token states with the padding masked out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from partsearch.errors import DataError
from partsearch.hub import WeightsError, WeightsSource
from partsearch.model.backbones.base import Backbone, BackboneOutput
from partsearch.model.backbones.weights import hub_error, load_weights_into, open_clip_model, read_state_dict


class Bert(Backbone):
    """[paper] BERT (any `transformers.AutoModel` encoder); tokens are the last hidden states of
    all tokens, mask = the attention mask. The unused pooler is dropped so every parameter
    receives a gradient (DDP needs that). Random weights build a BertConfig of
    `text_width` x `text_layers` (64-d heads)."""

    def __init__(self, source: WeightsSource, vocab_size: int, width: int, layers: int) -> None:
        super().__init__()
        from transformers import AutoModel, BertConfig, BertModel

        if source.kind == "random":
            config = BertConfig(
                vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
            )
            self.net = BertModel(config, add_pooling_layer=False)
        else:
            if source.kind == "local" and not Path(source.location, "config.json").is_file():
                raise WeightsError(f"text weights {source.location}: expected a transformers model directory with config.json")
            try:
                self.net = AutoModel.from_pretrained(source.location)
            except Exception as err:  # noqa: BLE001 - a failed download or unreadable files
                raise hub_error("text", source.location, err) from None
            if hasattr(self.net, "pooler"):
                self.net.pooler = None
        model_vocab = self.net.get_input_embeddings().num_embeddings
        if vocab_size > model_vocab:
            raise WeightsError(
                f"the tokenizer has {vocab_size} tokens but the text weights {source.location or 'random'} "
                f"embed only {model_vocab}; use the tokenizer of those weights (model.tokenizer)"
            )
        self.out_dim = self.net.config.hidden_size

    def stem(self) -> list[nn.Module]:
        return [self.net.embeddings]

    def stages(self) -> list[nn.Module]:
        return list(self.net.encoder.layer)

    def enable_grad_checkpointing(self) -> None:
        self.net.config.use_cache = False  # an encoder has no cache; this silences a warning
        # transformers 5 renamed the method; older releases (on some GPU hosts) have only the old name.
        if hasattr(self.net, "activation_checkpointing_enable"):
            self.net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> BackboneOutput:
        tokens = self.net(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return BackboneOutput(tokens, mask.bool(), None)


class ClipText(Backbone):
    """[ours] The open_clip ViT-B/16 text tower; tokens are ALL token states after `ln_final`,
    projected by `text_projection` (512-d), so the end-of-text token's state is exactly
    open_clip's `encode_text`. CLIP's causal attention means a token never sees the padding after
    it, and the mask (from the tokenizer's attention mask) removes the padding itself. Parameter
    names are those of the CLIP model, so a whole-model state dict loads (image keys ignored)."""

    def __init__(self, source: WeightsSource, vocab_size: int) -> None:
        super().__init__()
        clip = open_clip_model(source, None)
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.out_dim = self.text_projection.shape[1]
        if vocab_size > self.token_embedding.num_embeddings:
            raise WeightsError(f"clip_text embeds {self.token_embedding.num_embeddings} tokens but the tokenizer has {vocab_size}; use open_clip's tokenizer")
        if source.kind == "local":
            state = read_state_dict(source.location)
            state = {k: v for k, v in state.items() if k in self.state_dict() or not k.startswith(("visual.", "logit_"))}
            load_weights_into(self, state, source.location)

    def stem(self) -> list[nn.Module | nn.Parameter]:
        return [self.token_embedding, self.positional_embedding]

    def stages(self) -> list[nn.Module]:
        return list(self.transformer.resblocks)

    def enable_grad_checkpointing(self) -> None:
        self.transformer.grad_checkpointing = True

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> BackboneOutput:
        length = ids.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise DataError(f"clip_text takes at most {self.positional_embedding.shape[0]} tokens, got {length}; "
                            "set data.max_tokens to at most that")
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        tokens = self.ln_final(x) @ self.text_projection
        return BackboneOutput(tokens, mask.bool(), None)
