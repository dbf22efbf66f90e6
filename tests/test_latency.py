"""The streaming latency simulator (hardware.latency) and its differentiable backlog
(asr.losses.latency): a hand-worked backlog that builds and drains, both against a frame-by-frame
event simulation, routing cheap frames late against early, soft routing equal to hard routing
when hard, gradients against finite differences; device profiles by hand and their bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asr.losses.latency import backlog_latency, expected_cost
from hardware.latency import frame_costs, latency_summary, simulate
from hardware.profiles import PROFILES, load_profile, profile_from_dict


def _events(cost, length, hop, chunk=1, audio_seconds=None, final=0.0):
  """One utterance, one frame at a time: the frame is there when its chunk's audio (or the
  utterance) has ended; the processor takes it when free. Returns (finish times, latency)."""
  end = length * hop if audio_seconds is None else audio_seconds
  free, finish = 0.0, []
  for t in range(length):
    arrives = end if t == length - 1 else min((t // chunk + 1) * chunk * hop, end)
    free = max(free, arrives) + cost[t]
    finish.append(free)
  return finish, (free if length else end) - end + final


def test_a_backlog_builds_and_drains_as_worked_by_hand():
  # 10 ms frames; two frames of 20 ms queue work, cheap frames drain it.
  cost = jnp.array([[0.005, 0.020, 0.020, 0.001, 0.001, 0.001, 0.001]])
  tl = simulate(cost, jnp.array([7]), 0.01)
  np.testing.assert_allclose(tl.arrival[0], [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07], atol=1e-7)
  np.testing.assert_allclose(tl.finish[0], [0.015, 0.040, 0.060, 0.061, 0.062, 0.063, 0.071],
                             atol=1e-6)
  np.testing.assert_allclose(tl.backlog[0], [0.005, 0.020, 0.030, 0.021, 0.012, 0.003, 0.001],
                             atol=1e-6)
  np.testing.assert_allclose(tl.start[0], [0.010, 0.020, 0.040, 0.060, 0.061, 0.062, 0.070],
                             atol=1e-6)
  assert float(tl.latency[0]) == pytest.approx(0.001, abs=1e-6)  # drained by the end
  # Cut after five frames, the queue has not drained: 62 ms done - 50 ms audio.
  assert float(simulate(cost, jnp.array([5]), 0.01).latency[0]) == pytest.approx(0.012, abs=1e-6)
  assert float(backlog_latency(cost, jnp.array([5]), 0.01)[0]) == pytest.approx(0.012, abs=1e-6)


@pytest.mark.parametrize("chunk", [1, 3])
def test_simulator_and_backlog_equal_a_frame_by_frame_simulation(chunk):
  rng = np.random.default_rng(chunk)
  b, t, hop = 24, 40, 0.04
  cost = rng.exponential(0.035, (b, t)).astype(np.float32)   # about as fast as real time
  lengths = rng.integers(0, t + 1, b)
  lengths[:2] = (t, 0)
  # The audio ends within the last frame (or, for some, a little after its start).
  audio = (lengths - rng.uniform(0, 0.9, b)) * hop
  audio = np.maximum(audio, 0)
  final = rng.uniform(0, 0.01, b)
  tl = simulate(jnp.asarray(cost), jnp.asarray(lengths), hop, chunk=chunk,
                audio_seconds=jnp.asarray(audio, jnp.float32), final_cost=jnp.asarray(final))
  soft = backlog_latency(jnp.asarray(cost), jnp.asarray(lengths), hop, chunk=chunk,
                         audio_seconds=jnp.asarray(audio, jnp.float32),
                         final_cost=jnp.asarray(final))
  for i in range(b):
    finish, latency = _events(cost[i], lengths[i], hop, chunk, audio[i], final[i])
    np.testing.assert_allclose(tl.finish[i, : lengths[i]], finish, rtol=1e-5, atol=1e-5)
    assert float(tl.latency[i]) == pytest.approx(latency, abs=2e-5)
    assert float(soft[i]) == pytest.approx(latency, abs=2e-5)
  assert float(tl.latency[1]) == pytest.approx(final[1], abs=1e-6)  # no frames: final work only
  assert np.asarray(tl.latency).max() > 0.1  # some utterances queue well behind real time


@pytest.mark.parametrize("chunk", [1, 4])
def test_latency_is_never_negative_when_the_audio_ends_after_its_last_frame(chunk):
  """Audio a little longer than its frames (samples too few for one more frame): the last frame
  arrives when the audio ends, not at `lengths * hop`, so the latency is at least that frame's
  work, never negative. With work far below real time and a frame at a time, nothing queues:
  the latency is exactly the last frame's cost plus the final work (a chunk's frames arrive
  together and queue behind each other)."""
  rng = np.random.default_rng(4)
  b, t, hop = 16, 30, 0.04
  cost = rng.uniform(0.0005, 0.003, (b, t)).astype(np.float32)
  lengths = rng.integers(1, t + 1, b)
  audio = (lengths + rng.uniform(0.05, 0.95, b)) * hop
  final = rng.uniform(0, 0.001, b)
  args = dict(chunk=chunk, audio_seconds=jnp.asarray(audio, jnp.float32),
              final_cost=jnp.asarray(final))
  hard = np.asarray(simulate(jnp.asarray(cost), jnp.asarray(lengths), hop, **args).latency)
  soft = np.asarray(backlog_latency(jnp.asarray(cost), jnp.asarray(lengths), hop, **args))
  last = cost[np.arange(b), lengths - 1]
  np.testing.assert_allclose(soft, hard, atol=2e-6)
  assert (hard >= last + final - 1e-6).all()
  if chunk == 1:
    np.testing.assert_allclose(hard, last + final, atol=2e-6)
  for i in range(b):
    assert float(hard[i]) == pytest.approx(_events(cost[i], lengths[i], hop, chunk, audio[i],
                                                   final[i])[1], abs=2e-6)


def test_padding_changes_nothing():
  rng = np.random.default_rng(0)
  cost = rng.exponential(0.01, (3, 12)).astype(np.float32)
  lengths = jnp.array([12, 7, 3])
  padded = np.concatenate([cost, rng.exponential(1.0, (3, 5))], axis=1).astype(np.float32)
  for c in (1, 4):
    a = simulate(jnp.asarray(cost), lengths, 0.01, chunk=c).latency
    np.testing.assert_allclose(simulate(jnp.asarray(padded), lengths, 0.01, chunk=c).latency, a,
                               atol=1e-7)
    np.testing.assert_allclose(backlog_latency(jnp.asarray(padded), lengths, 0.01, chunk=c), a,
                               atol=1e-6)


def test_cheap_frames_routed_to_the_end_lower_latency():
  """The same work, in a different order: slow frames first let the backlog drain before the
  audio ends; slow frames last leave it all queued (why AmNet penalizes cheap routing while
  there is no backlog)."""
  hop, slow, fast = 0.03, 0.045, 0.006
  costs = {"fast first": [fast] * 20 + [slow] * 20, "fast last": [slow] * 20 + [fast] * 20}
  latency = {k: float(simulate(jnp.array([v]), jnp.array([40]), hop).latency[0])
             for k, v in costs.items()}
  assert latency["fast last"] < latency["fast first"] / 5
  assert latency["fast first"] == pytest.approx(20 * slow - 19 * hop, abs=1e-5)  # worked by hand


def test_soft_routing_equals_hard_when_hard_and_has_the_right_gradient():
  rng = np.random.default_rng(3)
  b, t, hop = 6, 30, 1.0
  branch = jnp.array([0.3, 1.4, 2.5])                     # seconds of each branch's work
  choice = rng.integers(0, 3, (b, t))
  lengths = jnp.asarray(rng.integers(5, t + 1, b))
  onehot = jax.nn.one_hot(choice, 3)
  hard = simulate(jnp.asarray(np.asarray(branch)[choice]), lengths, hop).latency
  np.testing.assert_allclose(backlog_latency(expected_cost(onehot, branch), lengths, hop), hard,
                             rtol=1e-6, atol=1e-5)
  # A soft routing: the latency is piecewise linear in the probabilities, so a central
  # difference away from a kink equals the gradient.
  logits = jnp.asarray(rng.standard_normal((b, t, 3)), jnp.float32)
  f = lambda z: backlog_latency(expected_cost(jax.nn.softmax(z), branch), lengths, hop).sum()
  grad = jax.grad(f)(logits)
  for i, j, k in [(0, 3, 1), (2, 10, 0), (4, 4, 2), (5, 1, 1)]:
    e = jnp.zeros_like(logits).at[i, j, k].set(1e-2)
    numeric = (f(logits + e) - f(logits - e)) / 2e-2
    assert float(grad[i, j, k]) == pytest.approx(float(numeric), rel=2e-2, abs=2e-4)
  assert float(jnp.abs(grad).sum()) > 0


def test_latency_summary():
  s = latency_summary([0.010, 0.020, 0.030, 0.040])
  assert s == pytest.approx({"latency_ms_mean": 25.0, "latency_ms_p50": 25.0,
                             "latency_ms_p90": 37.0, "latency_ms_max": 40.0})
  assert latency_summary([])["latency_ms_p50"] is None


def test_profiles_cost_work_as_documented():
  cpu, npu = PROFILES["cpu650"], PROFILES["npu"]
  assert float(cpu.seconds(650e6 / 2)) == pytest.approx(1.0)              # 2 FLOPs a MAC
  assert float(cpu.seconds(1e6, macs_executed=0)) == pytest.approx(2e6 / 650e6)  # no skipping
  # NPU: 256 MACs a cycle at 500 MHz; 2 GB/s; 16 bytes a cycle decompressed: slowest stage.
  assert float(npu.seconds(128e9)) == pytest.approx(1.0)
  assert float(npu.seconds(128e9, macs_executed=32e9)) == pytest.approx(0.25)  # zeros skipped
  assert float(npu.seconds(1e3, weight_bytes=4e9)) == pytest.approx(2.0)       # bandwidth-bound
  assert npu.weight_bytes_per_chunk(1 << 20) == 0 and npu.weight_bytes_per_chunk(3 << 20) == 3 << 20
  # The frame costs: a chunk's weight fetch is charged to its first frame.
  costs = frame_costs(npu, np.full((1, 4), 2e6), chunk=2, weight_bytes_per_chunk=4_000_000)
  np.testing.assert_allclose(costs[0], [2e-3, 1e6 / 128e9, 2e-3, 1e6 / 128e9], rtol=1e-6)


def test_profiles_load_from_json_and_name_what_is_wrong(tmp_path):
  spec = {"kind": "npu", "name": "mine", "macs_per_cycle": 64, "clock_hz": 2e8,
          "on_chip_bytes": 65536, "memory_bytes_per_second": 1e9,
          "decompress_bytes_per_cycle": 8, "zero_skipping": False}
  path = tmp_path / "mine.json"
  path.write_text(json.dumps(spec))
  mine = load_profile(path)
  assert mine.name == "mine" and float(mine.seconds(1.28e10, macs_executed=1)) == pytest.approx(1)
  assert load_profile("cpu650") is PROFILES["cpu650"]
  with pytest.raises(ValueError, match="clock_hz"):
    profile_from_dict({k: v for k, v in spec.items() if k != "clock_hz"})
  with pytest.raises(ValueError, match="clock_mhz"):
    profile_from_dict(dict(spec, clock_mhz=200))
  with pytest.raises(ValueError, match="macs_per_cycle must be a positive number"):
    profile_from_dict(dict(spec, macs_per_cycle=0))
  with pytest.raises(ValueError, match="'kind'"):
    profile_from_dict(dict(spec, kind="gpu"))
  with pytest.raises(ValueError, match="unknown device profile 'tpu'"):
    load_profile("tpu")


def test_a_cpu_that_skips_zeros_charges_only_the_macs_on_non_zero_weights():
  sparse = load_profile("cpu36sparse")
  assert sparse.seconds(1e6, 4e5) == pytest.approx(2 * 4e5 / 36e6)
  assert sparse.seconds(1e6) == pytest.approx(2 * 1e6 / 36e6)      # nothing said: all of them
  plain = profile_from_dict({"kind": "cpu", "name": "x", "flops_per_second": 36e6})
  assert not plain.zero_skipping and plain.seconds(1e6, 4e5) == pytest.approx(2 * 1e6 / 36e6)
