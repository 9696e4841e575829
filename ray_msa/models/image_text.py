"""Image + text sentiment classifier (positive / neutral / negative posts).

Encoders:
- `pretrained`: EfficientNet-Lite0 (ImageNet) feature maps, frozen and computed once
  (`vision` (B, 49, 1280) in the batch), and MiniLM: the states entering its top
  `TEXT_TOP_LAYERS` layers are computed once (`text` (B, L, 384)) and the model runs those
  top layers itself, fine-tuning the last `text_tune` of them at rate `text_lr` (0: all
  frozen). Fine-tuning the LM is what lifts text past a frozen probe (one fold, text alone:
  frozen 0.69, top two layers tuned 0.74); with the image, tuning four of MiniLM's six
  layers instead of two lifts 5-fold accuracy from 0.730 to 0.737, and the two bottom layers
  stay cached. Both are projected to `dim`.
- `scratch`: a small ResNet-style CNN (BasicBlocks with BatchNorm) over the raw image
  (`image` (B, 3, S, S) uint8, random crop and flip while training) and a Transformer
  encoder (LayerNorm) over the token ids.
Fusion of the two token sequences:
- `concat`: mean-pooled image and text, concatenated;
- `cross`: image tokens query the text (multi-head cross-attention + FFN, `layers` times);
- `bicross`: image->text then text->image cross-attention, stacked `layers` times.
`use` = "image" or "text" keeps one modality (the ablation). Loss: sigmoid focal loss
(Lin et al. 2017; α, γ hyperparameters) on one-hot targets, or cross-entropy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, masked_mean, padding_mask
from ray_msa.pretrained.efficientnet_lite import FEATURES as IMAGE_FEATURES
from ray_msa.pretrained.lm import load_lm

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VOCAB = 30522  # BERT's uncased vocabulary, which the bundled tokenizer uses
MASK_ID = 103  # its [MASK] token
TEXT_TOP_LAYERS = 4  # the LM's top layers the model holds (data.text.prepare_post_text caches their input)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.short = (
            nn.Sequential()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.short(x))


class ScratchCNN(nn.Module):
    """ResNet-style: a stride-2 stem, then three stages of two BasicBlocks (16, 32, 64
    channels), pooled to a 4x4 grid of tokens. Sized for 64-pixel images on CPUs (about
    0.05 GFLOP per image forward)."""

    def __init__(self, dim: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            stages += [BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.stages = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(4))
        self.project = nn.Linear(widths[-1], dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(self.stem(images)).flatten(2).transpose(1, 2))  # (B, 16, dim)


class CrossLayer(nn.Module):
    """`query` attends to `context` (multi-head), then an FFN; residuals and LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), Dropout(dropout), nn.Linear(ffn, dim))
        self.norm1, self.norm2, self.drop = nn.LayerNorm(dim), nn.LayerNorm(dim), Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_pad: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(
            query + self.drop(self.attn(query, context, context, key_padding_mask=context_pad, need_weights=False)[0])
        )
        return self.norm2(h + self.drop(self.ffn(h)))


def run_lm_layers(layers: nn.ModuleList, states: torch.Tensor, pad: torch.Tensor, frozen: int = 0) -> torch.Tensor:
    """Hugging Face BERT layers over (B, L, D) states with padding `pad` (True = padding);
    the first `frozen` layers build no graph."""
    additive = torch.zeros(pad.shape, dtype=states.dtype, device=states.device).masked_fill(
        pad, torch.finfo(states.dtype).min
    )[:, None, None, :]
    for i, layer in enumerate(layers):
        with torch.set_grad_enabled(torch.is_grad_enabled() and i >= frozen):
            out = layer(states, attention_mask=additive)
        states = out[0] if isinstance(out, tuple) else out
    return states


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss on one-hot targets, summed over classes, averaged over samples."""
    onehot = F.one_hot(target, logits.size(-1)).to(logits.dtype)
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    alpha_t = alpha * onehot + (1 - alpha) * (1 - onehot) if alpha >= 0 else 1.0
    return (alpha_t * (1 - p_t) ** gamma * bce).sum(-1).mean()


@dataclass(frozen=True)
class ImageTextConfig(ModelConfig):
    encoder: Literal["pretrained", "scratch"] = "pretrained"
    fusion: Literal["concat", "cross", "bicross"] = "bicross"
    dim: int = 256  # width both modalities are projected to; heads must divide it
    heads: int = 4
    ffn: int = 512
    layers: int = 1  # cross-attention layers (bicross: pairs), or the scratch text encoder's depth
    dropout: float = 0.1
    loss: Literal["focal", "cross_entropy"] = "focal"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    use: Literal["image+text", "image", "text"] = "image+text"  # one modality: the ablation
    text_tune: int = 0  # of MiniLM's top TEXT_TOP_LAYERS layers, how many are fine-tuned (pretrained encoder)
    text_lr: float = 1e-4  # their learning rate
    word_dropout: float = 0.0  # scratch text: share of words hidden behind [MASK] while training

    def __post_init__(self) -> None:
        self.at_least(1, "dim", "ffn", "layers")
        self.divides("heads", self.dim, "dim")
        self.fraction("dropout", "word_dropout")
        self.at_least(0.0, "focal_gamma")
        self.require(
            0 <= self.text_tune <= TEXT_TOP_LAYERS,
            "text_tune",
            f"{self.text_tune} is outside 0..{TEXT_TOP_LAYERS}",
            f"tune 0 to {TEXT_TOP_LAYERS} of the top layers",
        )
        self.positive("text_lr")


class ImageTextClassifier(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: ImageTextConfig = ImageTextConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 3,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs, own_lm=False)
        c = config
        encoder, fusion, use, dim, heads, ffn, layers = c.encoder, c.fusion, c.use, c.dim, c.heads, c.ffn, c.layers
        dropout, loss, focal_alpha, focal_gamma = c.dropout, c.loss, c.focal_alpha, c.focal_gamma
        text_tune, text_lr, word_dropout = c.text_tune, c.text_lr, c.word_dropout
        self.encoder, self.fusion, self.use = encoder, fusion, use
        self.loss_name, self.focal_alpha, self.focal_gamma = loss, focal_alpha, focal_gamma
        if use != "text":  # only the modules the forward pass uses (unused parameters upset DDP)
            self.image_in = (
                nn.Linear(feature_dims.get("vision", IMAGE_FEATURES), dim)
                if encoder == "pretrained"
                else ScratchCNN(dim)
            )
        if use != "image" and encoder == "pretrained":
            lm = load_lm(text.model)
            self.lm_top = nn.ModuleList(copy.deepcopy(layer) for layer in lm.encoder.layer[-TEXT_TOP_LAYERS:])
            self.text_frozen = TEXT_TOP_LAYERS - text_tune  # the lower ones stay as pretrained
            for layer in self.lm_top[: self.text_frozen]:
                layer.requires_grad_(False)
            self.text_lr = text_lr
            self.text_in = nn.Linear(lm.config.hidden_size, dim)
        elif use != "image":
            self.embed, self.position = nn.Embedding(VOCAB, dim, padding_idx=0), nn.Embedding(512, dim)
            for table in (self.embed, self.position):  # BERT's init: N(0, 1) tables would barely move at these rates
                nn.init.normal_(table.weight, std=0.02)
            self.embed.weight.data[0].zero_()
            self.word_dropout = word_dropout
            layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
            self.text_encoder = nn.TransformerEncoder(layer, max(1, layers), enable_nested_tensor=False)
        fused = use == "image+text" and fusion != "concat"
        self.image_to_text = nn.ModuleList(CrossLayer(dim, heads, ffn, dropout) for _ in range(layers if fused else 0))
        self.text_to_image = nn.ModuleList(
            CrossLayer(dim, heads, ffn, dropout) for _ in range(layers if fused and fusion == "bicross" else 0)
        )
        width = dim * (2 if use == "image+text" else 1)
        self.head = nn.Sequential(
            Dropout(dropout), nn.Linear(width, dim), nn.ReLU(), Dropout(dropout), nn.Linear(dim, outputs)
        )

    def parameter_groups(self, lr: float) -> list[dict]:
        if not hasattr(self, "lm_top"):
            return super().parameter_groups(lr)
        tuned = {id(p) for p in self.lm_top.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in tuned]
        return [
            {"params": rest, "lr": lr},
            {"params": [p for p in self.lm_top.parameters() if p.requires_grad], "lr": self.text_lr},
        ]

    def train(self, mode: bool = True) -> ImageTextClassifier:
        super().train(mode)
        for layer in getattr(self, "lm_top", [])[: getattr(self, "text_frozen", 0)]:
            layer.eval()  # frozen layers: no dropout, exactly the pretrained function
        return self

    def inputs(self) -> tuple[str, ...]:
        image = (
            () if self.use == "text" else ("vision", "vision_lengths") if self.encoder == "pretrained" else ("image",)
        )
        text = (
            ()
            if self.use == "image"
            else ("text", "text_lengths")
            if self.encoder == "pretrained"
            else ("text_ids", "text_mask", "text_lengths")
        )
        return ("labels", *image, *text)

    def image_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.encoder == "pretrained":
            return self.image_in(self.normalised(batch, "vision"))
        images = batch["image"].float() / 255.0
        if self.training:  # light augmentation: random shifted crop (pad 4) and horizontal flip
            size = images.shape[-1]
            padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
            dx, dy = torch.randint(0, 9, (2,)).tolist()
            images = padded[..., dy : dy + size, dx : dx + size]
            if torch.rand(()) < 0.5:
                images = images.flip(-1)
        mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
        return self.image_in((images - mean) / images.new_tensor(IMAGENET_STD)[:, None, None])

    def text_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder == "pretrained":
            states = batch["text"]
            pad = padding_mask(batch["text_lengths"], states.size(1))
            return self.text_in(run_lm_layers(self.lm_top, states, pad, self.text_frozen)), pad
        ids = batch["text_ids"]
        pad = batch["text_mask"] == 0
        if self.training and self.word_dropout > 0:  # augmentation: hide random words behind [MASK]
            hide = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & ~pad
            ids = ids.masked_fill(hide, MASK_ID)
        x = self.embed(ids) + self.position(torch.arange(ids.size(1), device=ids.device))
        return self.text_encoder(x, src_key_padding_mask=pad), pad

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        parts = []
        if self.use == "text":
            text, text_pad = self.text_tokens(batch)
            parts = [masked_mean(text, text_pad)]
        elif self.use == "image":
            parts = [self.image_tokens(batch).mean(1)]
        else:
            image, (text, text_pad) = self.image_tokens(batch), self.text_tokens(batch)
            for i, layer in enumerate(self.image_to_text):
                image = layer(image, text, text_pad)
                if self.fusion == "bicross":
                    text = self.text_to_image[i](text, image, None)
            parts = [image.mean(1), masked_mean(text, text_pad)]
        return ModelOutput(prediction=self.head(torch.cat(parts, dim=-1)))

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.loss_name == "focal":
            loss = sigmoid_focal_loss(output.prediction, batch["labels"], self.focal_alpha, self.focal_gamma)
        else:
            loss = F.cross_entropy(output.prediction, batch["labels"])
        return loss, {f"loss_{self.loss_name}": float(loss.detach())}
