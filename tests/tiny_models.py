"""Tiny models in the published formats, made by the tests (no model hub is reachable here).

Each has the real model's ONNX inputs and outputs (names, ranks, sizes that the loaders read)
with a few random weights, so the farm's loading, placement, caching and plumbing run for
real while the pixels are noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what onnxruntime and insightface's published models use
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _tensor(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name)


def scrfd(path: Path, seed: int = 0) -> Path:
    """SCRFD with 5 keypoints (like det_10g): input "input.1" [1, 3, H, W]; 9 outputs: scores
    [-1, 1], boxes [-1, 4] and keypoints [-1, 10] at strides 8, 16 and 32, two anchors each.
    At the 640x640 input the farm uses, one anchor of the coarsest stride scores high (the
    centre cell): one face-like box with five points around it, as on a frame with one face."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    # Points around an anchor, in stride units: eyes, nose, mouth corners.
    kps_bias = np.array([-0.7, -0.6, 0.7, -0.6, 0.0, 0.1, -0.5, 0.8, 0.5, 0.8], np.float32)
    for stride in (8, 16, 32):
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [pooled],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        heads = {
            "score": (2, 1, np.full(2, -6.0), True),
            "bbox": (8, 4, np.full(8, 3.0), False),
            "kps": (20, 10, np.tile(kps_bias, 2), False),
        }
        for head, (channels, per_anchor, bias, sigmoid) in heads.items():
            w, b = f"{head}{stride}_w", f"{head}{stride}_b"
            inits += [
                _tensor(w, rng.normal(0, 0.01, (channels, 3, 1, 1))),
                _tensor(b, bias),
            ]
            conv, nhwc, out = f"{head}{stride}_conv", f"{head}{stride}_nhwc", f"{head}_{stride}"
            nodes.append(helper.make_node("Conv", [pooled, w, b], [conv]))
            raw = conv
            if sigmoid and stride == 32:  # a prior that is high at the centre cell only
                prior = np.zeros((1, 2, 20, 20), np.float32)
                prior[0, 0, 10, 10] = 12.0
                inits.append(_tensor("centre_prior", prior))
                nodes.append(helper.make_node("Add", [conv, "centre_prior"], [conv + "_c"]))
                raw = conv + "_c"
            if sigmoid:
                nodes.append(helper.make_node("Sigmoid", [raw], [conv + "_sig"]))
                raw = conv + "_sig"
            nodes.append(helper.make_node("Transpose", [raw], [nhwc], perm=[0, 2, 3, 1]))
            shape = f"{head}{stride}_shape"
            inits.append(helper.make_tensor(shape, TensorProto.INT64, [2], [-1, per_anchor]))
            nodes.append(helper.make_node("Reshape", [nhwc, shape], [out]))
            outputs[head].append(
                helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", per_anchor])
            )
    graph = helper.make_graph(
        nodes,
        "scrfd_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        inits,
    )
    return _save(graph, path)


def arcface(path: Path, dim: int = 512, seed: int = 1) -> Path:
    """ArcFace recognition (like w600k_r50): input "input.1" [N, 3, 112, 112], output [N, dim]
    (no normalisation nodes inside, so the loader normalises with mean = std = 127.5)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["p"], kernel_shape=[16, 16], strides=[16, 16]
        ),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"]),
    ]
    inits = [_tensor("fc_w", rng.normal(0, 1, (3 * 7 * 7, dim))), _tensor("fc_b", np.zeros(dim))]
    graph = helper.make_graph(
        nodes,
        "arcface_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    return _save(graph, path)


def inswapper(path: Path, seed: int = 2) -> Path:
    """INSwapper-128: inputs "target" [1, 3, 128, 128] (RGB in [0, 1]) and "source" [1, 512]
    (the identity latent), output "output" [1, 3, 128, 128]; the last initializer is the
    512x512 "emap" the loader maps ArcFace embeddings through."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["target", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["source", "proj"], ["s"]),
        helper.make_node("Reshape", ["s", "s_shape"], ["s4"]),
        helper.make_node("Add", ["c", "s4"], ["mix"]),
        helper.make_node("Sigmoid", ["mix"], ["output"]),
    ]
    eye = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        eye[c, c, 1, 1] = 4.0  # mostly the target, so the paste-back is visible, not black
    emap = np.linalg.qr(rng.normal(0, 1, (512, 512)))[0]
    inits = [
        _tensor("conv_w", eye + rng.normal(0, 0.05, eye.shape)),
        _tensor("conv_b", np.full(3, -2.0)),
        _tensor("proj", rng.normal(0, 0.05, (512, 3))),
        helper.make_tensor("s_shape", TensorProto.INT64, [4], [1, 3, 1, 1]),
        _tensor("emap", emap),
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_tiny",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )
    return _save(graph, path)


def gfpgan(path: Path, size: int = 512, seed: int = 4) -> Path:
    """GFPGAN v1.4 as exported for onnxruntime: input "input" [1, 3, 512, 512] (RGB in [-1, 1]),
    output "output" of the same shape. Here a 1x1 convolution near identity, then Tanh: it
    changes every pixel of the crop a little, as a restorer does."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    weight = np.eye(3, dtype=np.float32)[:, :, None, None] + rng.normal(0, 0.05, (3, 3, 1, 1))
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gfpgan_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])],
        [_tensor("w", weight), _tensor("b", rng.normal(0, 0.05, 3))],
    )
    return _save(graph, path)


def wav2lip(path: Path, width: int = 2, seed: int = 3) -> Path:
    """A Wav2Lip checkpoint as published ({"state_dict": {"module.<layer>": tensor}} plus
    training counters), at 2/16 of the channels: the same layers and keys, ~0.6 M weights."""
    import torch
    from cameofarm.models.neural.wav2lip import build_network

    torch.manual_seed(seed)
    state = build_network(width).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}, "global_step": 0},
        str(path),
    )
    return path


_MEL = {  # 22.05 kHz, 80 mels, hop 256: the features NeMo's published English models use
    "sample_rate": 22050,
    "n_fft": 1024,
    "n_window_size": 1024,
    "n_window_stride": 256,
    "lowfreq": 0,
    "highfreq": 8000,
    "log": True,
    "log_zero_guard_value": 1e-05,
    "mag_power": 1.0,
    "dither": 0.0,
    "frame_splicing": 1,
    "pad_value": 0,
    "window": "hann",
    "normalize": None,
}


def fastpitch(path: Path, width: int = 32) -> Path:
    """A NeMo FastPitch .nemo (saved with `save_to`) with a global-style-token reference
    encoder, character tokens and one-layer transformers of `width` channels. Its duration
    head is set to ~5 frames per token so that speech has a plausible length."""
    import math

    import torch
    from nemo.collections.tts.models import FastPitchModel
    from omegaconf import OmegaConf

    labels = [" ", "'", ",", ".", "!", "?", "-", *"abcdefghijklmnopqrstuvwxyz"]
    fft = {"n_layer": 1, "n_head": 1, "d_model": width, "d_head": 16, "d_inner": 2 * width,
           "kernel_size": 3, "dropout": 0.1, "dropatt": 0.1, "dropemb": 0.0,
           "condition_types": ["add", "layernorm"]}  # fmt: skip
    predictor = {"_target_": "nemo.collections.tts.modules.fastpitch.TemporalPredictor",
                 "input_size": width, "kernel_size": 3, "filter_size": width, "dropout": 0.1,
                 "n_layers": 2, "condition_types": ["add", "layernorm"]}  # fmt: skip
    cfg = OmegaConf.create(
        {
            "labels": labels,
            "n_speakers": 1,
            "n_mel_channels": 80,
            "max_token_duration": 75,
            "symbols_embedding_dim": width,
            "pitch_embedding_kernel_size": 3,
            "learn_alignment": False,
            "sample_rate": 22050,
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "features": 80,
                "window_size": None,
                "window_stride": None,
                "log_zero_guard_type": "add",
                "pad_to": 1,
                **_MEL,
            },
            "input_fft": {
                "_target_": "nemo.collections.tts.modules.transformer.FFTransformerEncoder",
                "n_embed": len(labels) + 2,
                "d_embed": width,
                "padding_idx": len(labels) + 1,
                **fft,
            },
            "output_fft": {
                "_target_": "nemo.collections.tts.modules.transformer.FFTransformerDecoder",
                **fft,
            },
            "duration_predictor": predictor,
            "pitch_predictor": predictor,
            "speaker_encoder": {
                "_target_": "nemo.collections.tts.modules.submodules.SpeakerEncoder",
                "gst_module": {
                    "_target_": "nemo.collections.tts.modules.submodules.GlobalStyleToken",
                    "gst_size": width,
                    "n_style_token": 4,
                    "n_style_attn_head": 2,
                    "reference_encoder": {
                        "_target_": "nemo.collections.tts.modules.submodules.ReferenceEncoder",
                        "n_mels": 80,
                        "cnn_filters": [8, 8],
                        "dropout": 0.2,
                        "gru_hidden": width,
                        "kernel_size": 3,
                        "stride": 2,
                        "padding": 1,
                        "bias": True,
                    },
                },
            },
        }
    )
    torch.manual_seed(4)
    model = FastPitchModel(cfg=cfg)
    with torch.no_grad():
        head = model.fastpitch.duration_predictor.fc
        head.weight.mul_(0.01)
        head.bias.fill_(math.log(6.0))  # durations are exp(log d) - 1 frames
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path


def hifigan(path: Path) -> Path:
    """A NeMo HiFi-GAN .nemo with a narrow generator (upsampling 8x8x4 = the hop of 256).
    The discriminators are NeMo's fixed ones, so the file is ~280 MB like the published."""
    import torch
    from nemo.collections.tts.models import HifiGanModel
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "preprocessor": {
                "_target_": "nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures",
                "nfilt": 80,
                "pad_to": 0,
                "preemph": None,
                "log_zero_guard_type": "clamp",
                **{k: v for k, v in _MEL.items() if k != "pad_value"},
                "pad_value": -11.52,
            },
            "generator": {
                "_target_": "nemo.collections.tts.modules.hifigan_modules.Generator",
                "resblock": 1,
                "upsample_rates": [8, 8, 4],
                "upsample_kernel_sizes": [16, 16, 8],
                "upsample_initial_channel": 32,
                "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3, 5]],
            },
            "train_ds": {
                "defer_setup": True,
                "dataset": {"_target_": "nemo.collections.tts.data.dataset.VocoderDataset"},
            },
            "optim": {"_target_": "torch.optim.AdamW", "lr": 2e-4},
        }
    )
    torch.manual_seed(5)
    model = HifiGanModel(cfg=cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path


def titanet(path: Path) -> Path:
    """A NeMo speaker model (EncDecSpeakerLabelModel, the TitaNet class) .nemo: 16 kHz, 80 mel
    features, a separable convolution block with squeeze-excitation, attention pooling and a
    192-d embedding like TitaNet's."""
    import torch
    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from omegaconf import OmegaConf

    block = {"repeat": 1, "stride": [1], "dilation": [1], "dropout": 0.0, "residual": False}
    cfg = OmegaConf.create(
        {
            "sample_rate": 16000,
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "sample_rate": 16000,
                "window": "hann",
                "features": 80,
                "n_fft": 512,
                "frame_splicing": 1,
                "dither": 0.0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConvASREncoder",
                "feat_in": 80,
                "activation": "relu",
                "conv_mask": True,
                "jasper": [
                    {
                        "filters": 32,
                        "kernel": [3],
                        "separable": True,
                        "se": True,
                        "se_context_size": -1,
                        **block,
                    },
                    {"filters": 64, "kernel": [1], **block},
                ],
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
                "feat_in": 64,
                "num_classes": 4,
                "pool_mode": "attention",
                "emb_sizes": 192,
                "attention_channels": 16,
            },
            "loss": {
                "_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss",
                "scale": 30,
                "margin": 0.2,
            },
        }
    )
    torch.manual_seed(6)
    model = EncDecSpeakerLabelModel(cfg=cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path


# --- text-to-video pipelines (diffusers `save_pretrained` folders) ----------------------------

_PROMPT_WORDS = " ".join(
    [
        "a person talking in an office studio street garden kitchen close-up of one head and",
        "shoulders looking into the camera medium shot from the waist up facing wide standing",
        "scene calm neutral smiling joyful sad downcast expression",
    ]
).split()


def _tokenizer():
    """A word-level tokenizer in the fast-tokenizer format (tokenizer.json), T5's specials."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = dict.fromkeys(["<pad>", "</s>", "<unk>", *_PROMPT_WORDS])  # once each, in order
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=64,
    ), len(vocab)


def _text_encoder(config_class, model_class):
    """The tokenizer and a one-layer T5-family encoder (32 wide) of its vocabulary."""
    tokenizer, vocab = _tokenizer()
    config = config_class(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8,
    )  # fmt: skip
    return tokenizer, model_class(config)


def wan_pipeline(folder: Path, seed: int = 5) -> Path:
    """A Wan 2.1 text-to-video pipeline (UMT5 text encoder, Wan VAE, Wan transformer) with a
    few random weights, saved as diffusers saves the published one."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer, text = _text_encoder(UMT5Config, UMT5EncoderModel)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )  # fmt: skip
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    pipe.save_pretrained(str(folder))
    return folder


def ltx_pipeline(folder: Path, seed: int = 6) -> Path:
    """An LTX-Video text-to-video pipeline (T5 text encoder, LTX VAE and transformer) with a
    few random weights, saved as diffusers saves the published one."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer, text = _text_encoder(T5Config, T5EncoderModel)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
        decoder_causal=False,
    )  # fmt: skip
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32,
    )  # fmt: skip
    pipe = LTXPipeline(
        tokenizer=tokenizer,
        text_encoder=text,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(str(folder))
    return folder
