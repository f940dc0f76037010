"""The tiny Wan2.1 I2V preset: every part of `WanImageToVideoPipeline` at toy size, seeded,
written in diffusers layout so it is loaded with `from_pretrained` like the 14B checkpoint.

Sizes are chosen to be the smallest that keep the real architecture: 36 input channels
(noise 16 + mask 4 + first-frame latent 16), a CLIP image branch (`image_dim`,
`added_kv_proj_dim`), a 16-channel VAE with stride (4, 8, 8), a UMT5 text encoder and a
tokenizer built locally (no download).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TEXT_DIM = 32  # UMT5 d_model -> transformer text_dim
CLIP_DIM = 32  # CLIP vision hidden size -> transformer image_dim
CLIP_IMAGE_SIZE = 32
HEADS, HEAD_DIM = 4, 32  # dim 128: LoRA ranks 4..64 stay below the full parameter count


def i2v_transformer_config(
    *, heads: int, head_dim: int, ffn_dim: int, text_dim: int, image_dim: int,
    layers: int = 2, freq_dim: int = 32,
) -> dict:  # fmt: skip
    """WanTransformer3DModel kwargs of the I2V architecture (36 in-channels, CLIP branch)."""
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=36,  # noisy latent 16 + mask 4 + first-frame latent 16
        out_channels=16,
        text_dim=text_dim,
        freq_dim=freq_dim,
        ffn_dim=ffn_dim,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=image_dim,
        added_kv_proj_dim=heads * head_dim,
        rope_max_seq_len=64,
    )


TRANSFORMER_CONFIG: dict = i2v_transformer_config(
    heads=HEADS, head_dim=HEAD_DIM, ffn_dim=512, text_dim=TEXT_DIM, image_dim=CLIP_DIM
)

# Scheduler exactly as Wan-AI/Wan2.1-I2V-14B-*-Diffusers ship it (flow_shift set per model).
SCHEDULER_CONFIG: dict = dict(
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
    num_train_timesteps=1000,
    solver_order=2,
    solver_type="bh2",
    predict_x0=True,
    lower_order_final=True,
    final_sigmas_type="zero",
    timestep_spacing="linspace",
)

# Caption words the synthetic/UCF-101/K400 captions use most; anything else maps to <unk>,
# which is fine for a random-weight text encoder (it only has to be deterministic).
_WORDS = """
a an the of and in on with to from at by for is are moving moves move left right up down
slowly quickly fast slow red green blue yellow white black orange purple gray pink square
circle disk ball box bar stripe stripes pattern background foreground object objects shape
shapes bouncing rotating rotates spinning sliding scrolling zooming pulsing wave waves
video clip frame person people man woman playing doing action class motion camera scene
small large big tiny bright dark noise texture diagonal horizontal vertical across over
panning rings flickering blocks drifting gradient
apply eye makeup lipstick archery baby crawling balance beam band marching baseball pitch
basketball dunk bench press biking billiards blow dry hair candles body weight squats
bowling boxing punching bag speed breast stroke brushing teeth clean jerk cliff diving
cricket bowling shot cutting kitchen diving drumming fencing field hockey penalty floor
gymnastics frisbee catch front crawl golf swing haircut hammer throw hammering handstand
pushups walking head massage high jump horse race riding hula hoop ice dancing javelin
juggling balls jump rope jumping jack kayaking knitting long lunges military parade mixing
mopping nunchucks parallel bars pizza tossing guitar piano tabla violin cello daf dhol
flute sitar pole vault pommel pull ups punch push rafting rock climbing indoor rope
climbing rowing salsa spin shaving beard skiing skijet sky soccer juggling still rings
sumo wrestling surfing swing table tennis tai chi throw discus trampoline jumping typing
uneven walking dog wall writing board yo
0 1 2 3 4 5 6 7 8 9
"""


def _build_tokenizer(out: Path) -> None:
    """A WordLevel tokenizer with T5's special ids (pad 0, eos 1, unk 2) and T5's
    '<text> </s>' template, saved as tokenizer.json so AutoTokenizer loads it offline."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(_WORDS.split()))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
        padding_side="right",
    )
    fast.save_pretrained(out)


def vocab_size() -> int:
    return 3 + len(set(_WORDS.split()))


def tiny_vae(base_dim: int = 4, dim_mult: tuple[int, ...] = (1, 1, 1, 1)):
    """The tiny Wan VAE: z_dim 16 and stride (4, 8, 8) as the 14B's; `base_dim` its width."""
    from diffusers import AutoencoderKLWan

    # dim_mult 1 everywhere keeps the random one small; z_dim 16 and the default latents_mean/std keep
    # the 14B latent space contract (the world's trained VAE replaces them by measured stats).
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=16,
        dim_mult=list(dim_mult),
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def make_tiny(out: Path, seed: int = 0, *, vae=None, transformer=None) -> Path:
    """Write the tiny seeded Wan I2V pipeline to `out` (created if missing); returns `out`.

    `vae` / `transformer` replace the random parts (the world passes its trained VAE and,
    once pretrained, its base transformer); every other part is seeded from `seed`.
    The global RNG is left untouched (forked), so building never changes a caller's stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _make_tiny(Path(out), seed, vae, transformer)


def _make_tiny(out: Path, seed: int, vae, transformer) -> Path:
    from diffusers import (
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    out.mkdir(parents=True, exist_ok=True)
    # Every random part is drawn in this order from the (forked) seeded generator, so the
    # same seed writes identical weights; given parts still consume their draws, so the
    # text/image encoders are the same whether or not the world replaces the others.
    random_transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    random_vae = tiny_vae(4)
    transformer = random_transformer if transformer is None else transformer
    vae = random_vae if vae is None else vae
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size(),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    # CLIPVisionModel is the class the pipeline declares (it reads hidden_states[-2]).
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=CLIP_DIM,
            num_hidden_layers=3,  # the pipeline reads hidden_states[-2]
            num_attention_heads=2,
            intermediate_size=64,
            image_size=CLIP_IMAGE_SIZE,
            patch_size=8,
        )
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE_SIZE},
        crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE},
    )
    scheduler = UniPCMultistepScheduler(**SCHEDULER_CONFIG)

    tok_dir = out / "tokenizer"
    _build_tokenizer(tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=scheduler,
        image_processor=image_processor,
        image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    log.info("wrote tiny Wan I2V (seed %d) to %s", seed, out)
    return out
