"""RNN-T on the synthetic corpus (or LibriSpeech). Variants: `tiny` (tests, CI, notebooks:
trains and evaluates on the tiny corpus in under two minutes on CPU), `small` (the demo),
`base` (real runs).

  asr-train --config experiments/configs/rnnt.py:small --workdir W [--config.optim.peak_lr=3e-3]
"""

import ml_collections


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  variant = arg or "small"
  if variant not in ("tiny", "small", "base"):
    raise ValueError(f"unknown variant {variant!r}: tiny, small or base")
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.family = ""                      # reports colour runs by it; "" = "<model.encoder>-rnnt"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.dataset = {"tiny": "synth_speech/tiny", "small": "synth_speech/small",
                    "base": "synth_speech/full"}[variant]
  c.data.data_dir = ""               # "" = $ASR_DATA_DIR or ~/tensorflow_datasets
  c.data.build_if_missing = True     # the synthetic corpus builds itself (never downloaded)
  c.data.train_split = "train"
  c.data.eval_split = "dev"
  c.data.batch_size = {"tiny": 16, "small": 32, "base": 32}[variant]
  c.data.eval_batch_size = 32
  # Fewer buckets for tiny: each is one compilation, and tiny runs are mostly compilation.
  c.data.bucket_seconds = ((2.5, 3.5, 6.0) if variant == "tiny" else
                           (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.5, 16.0))
  c.data.max_chars_per_second = 25.0  # labels (characters or pieces): sizes each bucket's labels
  c.data.shuffle_buffer = 1024
  # Fresh audio (synthetic corpora): > 0 makes every epoch after the first new utterances of the
  # training speakers, synthesized by that many background processes while the model trains,
  # instead of the built split again (asr/data/synth_corpus.py, `fresh_epoch`). Off: measured
  # on `small` at 1,000 steps, 2 workers gained about a point of test WER for 1.6x the training
  # time, since synthesis and the step share the 2 cores (BENCHMARKS.md, "Fresh audio").
  c.data.fresh_audio_workers = 0
  c.data.on_bad_example = "skip"     # skipped examples are counted in the metrics
  c.data.stats_utterances = 500      # training utterances the feature statistics come from

  c.model = ml_collections.ConfigDict()
  # Output units: "chars" (model.vocab 29: blank, space, apostrophe, a-z) or "wordpiece" (a
  # SentencePiece unigram model of model.vocab ids, trained on the text of the first
  # data.tokenizer_texts training utterances when the run starts and stored in its workdir).
  # Characters: measured on `small` at 1,000 steps, 256 word pieces reached dev WER 72.4%
  # against 61.7%, with a 1.26x step (BENCHMARKS.md, "Word pieces").
  c.data.tokenizer = "chars"
  c.data.tokenizer_texts = 20_000
  c.model.vocab = 29
  c.model.num_mels = 80
  # Causal normalization (asr/models/frontend.py): the running statistics of the utterance so
  # far, with the training set's as a prior worth 100 frames (1 s), so streaming hears what
  # training heard.
  c.model.normalization = "causal"
  c.model.norm_prior_frames = 100.0
  c.model.encoder = "lstm"           # the family; its options are the block of that name
  c.model.lstm = ml_collections.ConfigDict()
  c.model.lstm.hidden = {"tiny": 64, "small": 256, "base": 512}[variant]
  c.model.lstm.layers = {"tiny": 1, "small": 2, "base": 4}[variant]
  c.model.lstm.stack = 3             # 3 x 10 ms feature frames -> one 30 ms frame
  # LayerNorm after each LSTM: measured on `small`, dev CER 0.43 at step 300 with it, 0.78
  # without (and the RNN-T still decoding one fixed sentence at step 900).
  c.model.lstm.layer_norm = True
  # 60 ms frames above the first LSTM (CTC stays on its 30 ms frames): measured on `small`,
  # 1.7x the steps per second at the same dev CER at step 300.
  c.model.lstm.reduce = {"tiny": 1, "small": 2, "base": 2}[variant]
  c.model.lstm.reduce_after = 1
  c.model.lstm.dropout = 0.0
  # Stateless: leans less on the label history, so memorizes sentence templates less readily.
  c.model.predictor = "stateless"
  c.model.pred_embed = {"tiny": 32, "small": 128, "base": 256}[variant]
  c.model.pred_hidden = {"tiny": 64, "small": 256, "base": 512}[variant]
  c.model.stateless_context = 2
  c.model.joint_dim = {"tiny": 64, "small": 256, "base": 512}[variant]
  c.model.loss_chunk = 16
  # Precision of the products (asr/models/dense.py): "bfloat16" multiplies in bfloat16 with
  # float32 sums, parameters, optimizer state and loss - a GPU's tensor cores. On this project's
  # 2-core CPU it is only 1.02-1.05x faster (BENCHMARKS.md); float32 is the reference.
  c.model.matmul_dtype = "float32"

  # The objective: a weight per named loss term (asr/training/objective.py); a schedule named
  # `<term>_weight` under `schedules` scales one over the steps. A CTC weight above 0 gives the
  # encoder a CTC head: measured on `small`, 0.5 took dev CER from 0.78 to 0.43 at step 300
  # (with LayerNorm; BENCHMARKS.md).
  c.loss = ml_collections.ConfigDict()
  c.loss.rnnt = 1.0
  c.loss.ctc = 0.5
  # Named schedules of the step (asr/training/schedules.py), reaching the loss terms and the
  # model; the learning rate's comes from `optim`.
  c.schedules = ml_collections.ConfigDict()
  # Parameter transforms (asr/training/transforms.py): name -> {factory: "module:callable", ...}.
  c.transforms = ml_collections.ConfigDict()
  # Model surgery (asr/training/loop.py, build_model): name -> {factory: "module:callable", ...},
  # functions that change the built model's structure (factorized layers).
  c.surgery = ml_collections.ConfigDict()
  # Modules imported before the run starts: they register encoder families or loss terms.
  c.imports = ()
  # Start from another run's weights: its workdir, checkpoints folder or one step's folder;
  # `init_from_keys` is a regex over parameter paths ("" = all), e.g. "params/encoder/";
  # `init_from_rename`, (pattern, replacement) pairs that map a path of this model to the
  # checkpoint's path it starts from (asr/training/loop.py, take_stored): a new branch copies
  # a trained layer.
  c.init_from = ""
  c.init_from_keys = ""
  c.init_from_rename = ()

  c.optim = ml_collections.ConfigDict()
  c.optim.peak_lr = {"tiny": 3e-3, "small": 3e-3, "base": 1e-3}[variant]
  c.optim.warmup_steps = {"tiny": 20, "small": 100, "base": 2000}[variant]
  c.optim.end_lr_ratio = 0.05
  c.optim.weight_decay = 1e-4
  c.optim.clip_norm = 5.0

  c.augment = ml_collections.ConfigDict()
  # Augmentation is for long runs: on `small` at 1,300 steps it left dev CER at 32.7% against
  # 26.3% without (BENCHMARKS.md), although held-out speakers are where the error is.
  c.augment.enabled = variant == "base"
  c.augment.freq_masks = 2
  c.augment.freq_mask_width = 15
  c.augment.time_masks = 2
  c.augment.time_mask_ratio = 0.05
  c.augment.speed = (0.9, 1.1)
  c.augment.warp = (0.9, 1.1)
  # To ramp augmentation in rather than start with it (it slowed the first 1,300 steps above):
  # c.schedules.augment_strength = dict(kind="linear", start=0.0, end=1.0, begin_step=1000,
  #                                     end_step=3000)

  c.train = ml_collections.ConfigDict()
  # small: what fits the demo's 15 minutes on 2 cores with the corpus build and the final
  # evaluations, with room: 2.1-2.6 steps/s measured on the reference machine; 1,500 steps
  # took 14.5 minutes in all on its slower day (BENCHMARKS.md).
  c.train.num_steps = {"tiny": 60, "small": 1200, "base": 100_000}[variant]
  c.train.log_every = {"tiny": 10, "small": 50, "base": 100}[variant]
  c.train.eval_every = {"tiny": 60, "small": 1200, "base": 5000}[variant]
  c.train.eval_max_batches = {"tiny": 0, "small": 0, "base": 0}[variant]  # 0 = whole split
  c.train.checkpoint_every = {"tiny": 30, "small": 200, "base": 2000}[variant]
  c.train.keep_checkpoints = 3
  c.train.max_nonfinite_in_a_row = 5
  c.train.max_symbols = 4            # greedy labels per 30 ms frame during evaluation
  # Every evaluation simulates each utterance's latency on this device profile (hardware/
  # profiles.py: cpu650, npu or a JSON file; "" for none), reported as latency_ms_p50 / _p90.
  c.train.latency_profile = "cpu650"
  # The devices the step's mesh spans: "" for JAX's default backend (a GPU where the `cuda`
  # extra finds one), or "cpu" / "gpu" / "tpu" to insist (a run fails at start without them).
  c.train.platform = ""

  c.wandb = ml_collections.ConfigDict()
  c.wandb.project = "ondevice-asr"
  c.wandb.mode = ""                  # "" = $WANDB_MODE, else offline (no account needed)
  c.wandb.group = ""
  c.wandb.name = ""
  return c
