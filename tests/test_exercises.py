"""Every checker passes on a hand-written reference solution and fails, with its hint, on the stub
(NotImplementedError), on ``None``, on the wrong type and on typical wrong answers."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bupo_core.adapter import ArchitectureAdapter
from bupo_core.capture import forward_to_layer
from bupo_core.teaching import exercises as ex


# --------------------------------------------------------------------------- reference solutions
def capture_stream(
    model, input_ids, *, attn_role="attn_write", return_value=False, keep_hooks=False, normed_last=False
):
    adapter = ArchitectureAdapter(model)
    L = adapter.num_layers
    captured = {}

    def save_as(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[name] = out.detach()
            if return_value and name == "F1":
                return out * 2

        return hook

    def save_h0(module, args, kwargs):
        captured["H0"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handles = [adapter.block(1).register_forward_pre_hook(save_h0, with_kwargs=True)]
    for l in range(1, L + 1):
        handles.append(adapter.module(l, attn_role).register_forward_hook(save_as(f"A{l}")))
        handles.append(adapter.module(l, "ffn_write").register_forward_hook(save_as(f"F{l}")))
        handles.append(adapter.block(l).register_forward_hook(save_as(f"H{l}")))
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, output_hidden_states=True)
    finally:
        if not keep_hooks:
            for h in handles:
                h.remove()
    if normed_last:
        captured[f"H{L}"] = out.hidden_states[-1]
    return captured


def reconstruct(captured, num_layers, *, last=True, with_ffn=True):
    total = captured["H0"].double()
    for l in range(1, num_layers + 1 if last else num_layers):
        total = total + captured[f"A{l}"].double() + (captured[f"F{l}"].double() if with_ffn else 0)
    return total


def policy(h, E_u, final_norm=None, *, always_norm=False, no_softmax=False):
    x = final_norm(h) if (final_norm is not None or always_norm) else h
    logits = x.float() @ E_u.float().T
    return logits if no_softmax else torch.softmax(logits, -1)


def positions(P, R, *, shift=0):
    return list(range(P - 1 + shift, P + R - 1 + shift))


def chunked_entropy(x, E_u, chunk_size, *, chunked=True, naive=False):
    out = torch.empty(x.shape[0])
    step = chunk_size if chunked else x.shape[0]
    for s in range(0, x.shape[0], step):
        logits = x[s : s + step].float() @ E_u.float().T
        if naive:
            p = torch.softmax(logits, -1)
            out[s : s + step] = -(p * p.log()).sum(-1)
        else:
            logp = torch.log_softmax(logits, -1)
            out[s : s + step] = -(logp.exp() * logp).sum(-1)
    return out


def entropy_change(capture, entropy, *, raw_inputs=False, reverse=False):
    L = capture.num_layers
    attn, ffn = [], []
    for l in range(1, L + 1):
        a_in = capture.resid(l - 1) if raw_inputs else capture.attn_in(l)
        f_in = capture.resid(l - 1) + capture.attn_out(l) if raw_inputs else capture.ffn_in(l)
        da = entropy(capture.attn_out(l)) - entropy(a_in)
        df = entropy(capture.ffn_out(l)) - entropy(f_in)
        attn.append(-da if reverse else da)
        ffn.append(-df if reverse else df)
    return torch.stack(attn), torch.stack(ffn)


def boundary(ffn_change, *, zero_based=False, last_positive=False):
    values = list(ffn_change)
    pos = [i for i, v in enumerate(values) if v > 0]
    if not pos:
        return None
    if last_positive:
        return pos[-1] + 1
    end = pos[0]
    while end + 1 < len(values) and values[end + 1] > 0:
        end += 1
    return end if zero_based else end + 1


def full_logits(model, h, *, softcap=True):
    a = ArchitectureAdapter(model)
    out = torch.nn.functional.linear(
        a.final_norm(h).float(), a.unembed_weight.float(), None if a.unembed_bias is None else a.unembed_bias.float()
    )
    if softcap and a.logit_softcap:
        out = torch.tanh(out / a.logit_softcap) * a.logit_softcap
    return out


def reward(text, answer, *, pattern=r"-?\d+", first=False, substring=False):
    if substring:
        return 1.0 if answer in text else 0.0
    found = re.findall(pattern, text)
    if not found:
        return 0.0
    return 1.0 if (found[0] if first else found[-1]) == answer else 0.0


def advantages(rewards, G, *, unbiased=True, per_group=True):
    out = torch.zeros(len(rewards))
    if not per_group:
        return (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    for g in range(len(rewards) // G):
        r = rewards[g * G : (g + 1) * G]
        if (r == r[0]).all():
            continue
        out[g * G : (g + 1) * G] = (r - r.mean()) / (r.std(unbiased=unbiased) + 1e-6)
    return out


def clipped(
    logp, old_logp, adv, mask, *, eps_low, eps_high, dual_clip, aggregation, use_mask=True, use_dual=True, detach=False
):
    A = adv[:, None]
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))
    loss = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    if dual_clip is not None and use_dual:
        loss = torch.where(A < 0, torch.minimum(loss, -dual_clip * A), loss)
    m = mask if use_mask else torch.ones_like(mask)
    if aggregation == "token-mean":
        out = (loss * m).sum() / m.sum()
    else:
        out = ((loss * m).sum(1) / m.sum(1)).mean()
    return out.detach() if detach else out


def internal_logprobs(model, batch, layer, *, full=False, shift=True, no_grad=False):
    a = ArchitectureAdapter(model)
    with torch.set_grad_enabled(not no_grad):
        if full:
            from bupo_core.capture import position_ids_from_mask

            hs = model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=position_ids_from_mask(batch.attention_mask),
                output_hidden_states=True,
            ).hidden_states
            h = hs[layer]
        else:
            h = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask)
        logp = torch.log_softmax(a.logits(h, "none"), -1)
        tgt = batch.targets if shift else batch.input_ids
        return logp.gather(-1, tgt[..., None]).squeeze(-1) * batch.prediction_mask


def phase(step, method, inter_steps, *, strict=False):
    if method != "bupo":
        return "full"
    return "internal" if (step < inter_steps if strict else step <= inter_steps) else "full"


def layer_kl(a, b, *, reverse=False):
    lp, lq = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    if reverse:
        lp, lq = lq, lp
    return (lp.exp() * (lp - lq)).sum(-1)


def cosine(a, b, *, dot=False):
    return (a * b).sum(-1) if dot else torch.nn.functional.cosine_similarity(a, b, dim=-1)


def pass_k(n, c, k, *, plug_in=False):
    if plug_in:
        return 1 - (1 - c / n) ** k
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def sign_flip(diffs, *, one_sided=False, strict=False):
    import itertools

    observed = abs(sum(diffs))
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(diffs)):
        total = sum(s * x for s, x in zip(signs, diffs))
        value = total if one_sided else abs(total)
        hits += (value > observed + 1e-12) if strict else (value >= observed - 1e-12)
    if all(x == 0 for x in diffs):
        return 1.0
    return hits / 2 ** len(diffs)


def bootstrap(values, confidence=0.95, resamples=2000, seed=0, *, of_values=False):
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    if of_values:
        lo, hi = np.quantile(arr, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
        return float(lo), float(hi)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def _kw(fn, **bound):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **bound)

    return wrapped


# checker -> (reference solution, [(typical wrong answer, words its hint must contain)])
CASES = {
    "check_capture_residual_stream": (
        capture_stream,
        [
            (_kw(capture_stream, attn_role="attn"), "post_attention_layernorm"),
            (_kw(capture_stream, normed_last=True), "final norm"),
            (_kw(capture_stream, keep_hooks=True), "handle.remove()"),
            (_kw(capture_stream, return_value=True), "return None"),
        ],
    ),
    "check_additive_decomposition": (
        reconstruct,
        [
            (_kw(reconstruct, last=False), "range(1, L + 1)"),
            (_kw(reconstruct, with_ffn=False), "FFN writes"),
            (lambda c, L: c[f"H{L}"], "captured H^L itself"),
        ],
    ),
    "check_internal_policy": (
        policy,
        [
            (_kw(policy, no_softmax=True), "apply softmax"),
            (lambda h, E, n=None: policy(h, E, n) if n is None else policy(h, E, None), "apply it to h"),
        ],
    ),
    "check_prediction_positions": (
        positions,
        [
            (_kw(positions, shift=1), "one position too late"),
            (lambda P, R: list(range(P - 1, P + R)), "one position too many"),
        ],
    ),
    "check_chunked_entropy": (
        chunked_entropy,
        [
            (_kw(chunked_entropy, chunked=False), "larger than one chunk"),
            (_kw(chunked_entropy, naive=True), "NaN"),
            (lambda x, E, c: chunked_entropy(x, E, c) / math.log(2), "natural log"),
        ],
    ),
    "check_entropy_change": (
        entropy_change,
        [
            (_kw(entropy_change, raw_inputs=True), "NORMED tensor"),
            (_kw(entropy_change, reverse=True), "sign is reversed"),
        ],
    ),
    "check_boundary_layer": (
        boundary,
        [
            (_kw(boundary, zero_based=True), "off by one"),
            (_kw(boundary, last_positive=True), "FIRST run"),
        ],
    ),
    "check_full_policy_logits": (
        full_logits,
        [
            (_kw(full_logits, softcap=False), "soft-caps"),
        ],
    ),
    "check_reward": (
        reward,
        [
            (_kw(reward, first=True), "LAST number"),
            (_kw(reward, substring=True), "substrings"),
            (_kw(reward, pattern=r"\d+"), "minus sign"),
            (_kw(reward, pattern=r"-?\d+\.?"), "digits only"),
        ],
    ),
    "check_group_advantages": (
        advantages,
        [
            (_kw(advantages, unbiased=False), "biased standard deviation"),
            (_kw(advantages, per_group=False), "OWN group"),
        ],
    ),
    "check_clipped_loss": (
        clipped,
        [
            (_kw(clipped, use_mask=False), "mask is missing"),
            (_kw(clipped, use_dual=False), "dual clip is missing"),
            (lambda *a, **k: clipped(*a, **(k | {"aggregation": "token-mean"})), "aggregation"),
            (_kw(clipped, detach=True), "no gradient"),
        ],
    ),
    "check_internal_logprobs": (
        internal_logprobs,
        [
            (_kw(internal_logprobs, shift=False), "off by one"),
            (_kw(internal_logprobs, full=True), "ran, but"),
            (_kw(internal_logprobs, no_grad=True), "no gradient"),
        ],
    ),
    "check_phase_switch": (
        phase,
        [
            (_kw(phase, strict=True), "use <="),
            (lambda step, method, s: "internal" if step <= s else "full", "never has an internal phase"),
        ],
    ),
    "check_layer_kl": (
        layer_kl,
        [
            (_kw(layer_kl, reverse=True), "wrong direction"),
        ],
    ),
    "check_hidden_cosine": (
        cosine,
        [
            (_kw(cosine, dot=True), "dot product"),
            (lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=0), "shape"),
        ],
    ),
    "check_pass_at_k": (
        pass_k,
        [
            (_kw(pass_k, plug_in=True), "plug-in"),
            (lambda n, c, k: c / n, "pass rate"),
        ],
    ),
    "check_sign_flip_test": (
        sign_flip,
        [
            (_kw(sign_flip, one_sided=True), "one-sided"),
            (_kw(sign_flip, strict=True), "ties count"),
        ],
    ),
    "check_bootstrap_interval": (
        bootstrap,
        [
            (_kw(bootstrap, of_values=True), "spread of the values"),
            (lambda v, confidence=0.95, resamples=2000, seed=0: bootstrap(v, 0.95, resamples, seed), "confidence"),
        ],
    ),
}


def test_every_checker_is_covered_and_exported():
    checkers = sorted(n for n in dir(ex) if n.startswith("check_"))
    assert checkers == sorted(CASES)
    assert sorted(n for n in ex.__all__ if n.startswith("check_")) == checkers
    assert sorted(ex._LIBRARY) == checkers  # every exercise has a library fallback for later cells


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_solution_passes(name, capsys):
    solution, _ = CASES[name]
    getattr(ex, name)(solution)
    out = capsys.readouterr().out
    assert name in out and "pass" in out


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise: write this function")


@pytest.mark.parametrize("name", sorted(CASES))
def test_stub_fails_with_a_hint(name):
    with pytest.raises(AssertionError, match="not implemented yet") as info:
        getattr(ex, name)(_stub)
    assert "hint:" in str(info.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_none_fails_with_a_hint(name):
    with pytest.raises(AssertionError) as info:
        getattr(ex, name)(lambda *a, **k: None)
    assert "None" in str(info.value) and "hint:" in str(info.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_type_fails_with_a_hint(name):
    with pytest.raises(AssertionError) as info:
        getattr(ex, name)(lambda *a, **k: "not a result")
    assert "hint:" in str(info.value) and "failed" in str(info.value)


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n][1]))])
def test_typical_wrong_answer_fails_with_its_hint(name, index):
    wrong, words = CASES[name][1][index]
    with pytest.raises(AssertionError) as info:
        getattr(ex, name)(wrong)
    message = str(info.value)
    assert "failed on case" in message and "hint:" in message
    assert words in message, message


def test_message_names_case_expected_and_got():
    with pytest.raises(AssertionError) as info:
        ex.check_group_advantages(_kw(advantages, unbiased=False))
    message = str(info.value)
    for part in ("check_group_advantages failed on case:", "expected:", "got:", "hint:", "unbiased"):
        assert part in message


def test_checker_rejects_a_non_callable():
    with pytest.raises(AssertionError, match="expects your function"):
        ex.check_pass_at_k(3)


# --------------------------------------------------------------------------- alternative correct answers
def capture_stream_plain(model, input_ids):
    """A second correct capture: block outputs via output_hidden_states' pre-norm states, module writes by hooks."""
    a = ArchitectureAdapter(model)
    out = {}
    handles = [
        a.block(1).register_forward_pre_hook(
            lambda m, args, kw: out.__setitem__("H0", (args[0] if args else kw["hidden_states"]).clone()),
            with_kwargs=True,
        )
    ]
    for l in range(1, a.num_layers + 1):
        for key, mod in (
            (f"A{l}", a.module(l, "attn_write")),
            (f"F{l}", a.module(l, "ffn_write")),
            (f"H{l}", a.block(l)),
        ):
            handles.append(
                mod.register_forward_hook(
                    lambda m, i, o, key=key: out.__setitem__(key, (o[0] if isinstance(o, tuple) else o).clone())
                )
            )
    try:
        with torch.inference_mode():
            model(input_ids=input_ids)
    finally:
        for h in handles:
            h.remove()
    return out


def entropy_categorical(x, E_u, chunk_size):
    return torch.cat(
        [
            torch.distributions.Categorical(logits=x[s : s + chunk_size] @ E_u.T).entropy()
            for s in range(0, len(x), chunk_size)
        ]
    )


def entropy_logsumexp(x, E_u, chunk_size):
    out = []
    for s in range(0, len(x), chunk_size):
        z = x[s : s + chunk_size] @ E_u.T
        p = torch.softmax(z, -1)
        out.append(torch.logsumexp(z, -1) - (p * z).sum(-1))
    return torch.cat(out)


def entropy_float64(x, E_u, chunk_size):
    out = []
    for s in range(0, len(x), chunk_size):
        logp = torch.log_softmax((x[s : s + chunk_size] @ E_u.T).double(), -1)
        out.append(-(logp.exp() * logp).sum(-1).float())
    return torch.cat(out)


def entropy_change_loop(capture, entropy):
    L = capture.num_layers
    attn = torch.stack([entropy(capture.attn_out(l)) - entropy(capture.attn_in(l)) for l in range(1, L + 1)])
    ffn = torch.stack([entropy(capture.ffn_out(l)) - entropy(capture.ffn_in(l)) for l in range(1, L + 1)])
    return attn, ffn


def boundary_while(ffn_change):
    l = 0
    while l < len(ffn_change) and not ffn_change[l] > 0:
        l += 1
    if l == len(ffn_change):
        return None
    while l + 1 < len(ffn_change) and ffn_change[l + 1] > 0:
        l += 1
    return l + 1


def advantages_vectorised(rewards, G):
    r = rewards.view(-1, G)
    std = r.std(1, keepdim=True)
    return torch.where(std > 0, (r - r.mean(1, keepdim=True)) / (std + 1e-6), torch.zeros_like(r)).view(-1)


def clipped_where(logp, old_logp, adv, mask, *, eps_low, eps_high, dual_clip, aggregation):
    A = adv.unsqueeze(1).expand_as(logp)
    ratio = (logp - old_logp).exp()
    surrogate = torch.min(A * ratio, A * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    loss = -surrogate
    if dual_clip is not None:
        loss = torch.where(A < 0, torch.clamp(loss, max=(-dual_clip * A)), loss)
    loss = loss.masked_fill(mask == 0, 0.0)
    if aggregation == "token-mean":
        return loss.sum() / mask.sum()
    return (loss.sum(-1) / mask.sum(-1)).mean()


def internal_logprobs_hooks(model, batch, layer):
    """Correct IPA log-probs by stopping the forward with an exception after block l."""
    a = ArchitectureAdapter(model)
    kept = {}

    class Stop(Exception):
        pass

    def grab(m, i, o):
        kept["h"] = o[0] if isinstance(o, tuple) else o
        raise Stop

    from bupo_core.capture import position_ids_from_mask

    h = a.block(layer).register_forward_hook(grab)
    try:
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),
        )
    except Stop:
        pass
    finally:
        h.remove()
    logits = kept["h"].float() @ a.unembed_weight.float().T
    return torch.log_softmax(logits, -1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.prediction_mask


def internal_logprobs_truncated_no_grad_forward(model, batch, layer):
    """Wrong: the forward through blocks 1..l under no_grad, only the projection with gradient."""
    a = ArchitectureAdapter(model)
    with torch.no_grad():
        h = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask)
    logp = torch.log_softmax(a.logits(h, "none"), -1)
    return logp.gather(-1, batch.targets[..., None]).squeeze(-1) * batch.prediction_mask


def full_logits_float64(model, h):
    a = ArchitectureAdapter(model)
    z = a.final_norm(h).double() @ a.unembed_weight.double().T
    if a.unembed_bias is not None:
        z = z + a.unembed_bias.double()
    if a.logit_softcap:
        z = a.logit_softcap * torch.tanh(z / a.logit_softcap)
    return z.float()


def bootstrap_choice(values, confidence=0.95, resamples=2000, seed=0):
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    means = [rng.choice(v, size=len(v), replace=True).mean() for _ in range(resamples)]
    return tuple(np.percentile(means, [50 * (1 - confidence), 100 - 50 * (1 - confidence)]))


def bootstrap_torch(values, confidence=0.95, resamples=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(values, dtype=torch.float64)
    means = v[torch.randint(0, len(v), (resamples, len(v)), generator=g)].mean(1)
    q = torch.quantile(means, torch.tensor([(1 - confidence) / 2, 1 - (1 - confidence) / 2], dtype=torch.float64))
    return float(q[0]), float(q[1])


def bootstrap_normal(values, confidence=0.95, resamples=2000, seed=0):
    """Wrong: the normal approximation, no resampling at all."""
    from statistics import NormalDist

    v = np.asarray(values, dtype=float)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    se = v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - z * se), float(v.mean() + z * se)


def sign_flip_bits(diffs):
    n, obs, hits = len(diffs), abs(sum(diffs)), 0
    for mask in range(2**n):
        total = sum(-x if mask >> i & 1 else x for i, x in enumerate(diffs))
        hits += abs(total) >= obs - 1e-12
    return hits / 2**n


def sign_flip_numpy(diffs):
    import itertools

    d = np.asarray(diffs, dtype=float)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12))


def entropy_shifted(capture, entropy):
    attn, ffn = entropy_change(capture, entropy)
    return torch.roll(attn, 1, 0), torch.roll(ffn, 1, 0)


ALTERNATIVES = {
    "check_capture_residual_stream": [capture_stream_plain, _kw(capture_stream)],
    "check_additive_decomposition": [
        lambda c, L: sum((c[f"A{l}"].double() + c[f"F{l}"].double() for l in range(1, L + 1)), c["H0"].double()),
        lambda c, L: torch.stack([c["H0"]] + [c[f"{k}{l}"] for l in range(1, L + 1) for k in "AF"]).double().sum(0),
    ],
    "check_internal_policy": [
        lambda h, E, n=None: torch.nn.functional.softmax(
            torch.einsum("...d,nd->...n", n(h) if n is not None else h, E), dim=-1
        ),
        lambda h, E, n=None: torch.log_softmax((h if n is None else n(h)).double() @ E.double().T, -1).exp().float(),
    ],
    "check_prediction_positions": [
        lambda P, R: np.arange(P - 1, P + R - 1),
        lambda P, R: range(P - 1, P + R - 1),
        lambda P, R: torch.arange(P - 1, P + R - 1),
        lambda P, R: [t for t in range(P + R) if P <= t + 1 < P + R],
    ],
    "check_chunked_entropy": [entropy_categorical, entropy_logsumexp, entropy_float64],
    "check_entropy_change": [entropy_change_loop, lambda c, e: tuple(x.double() for x in entropy_change(c, e))],
    "check_boundary_layer": [boundary_while, lambda v: boundary(np.array(v))],
    "check_full_policy_logits": [
        lambda model, h: (
            ArchitectureAdapter(model).final_norm(h) @ ArchitectureAdapter(model).unembed_weight.T
            + (0 if ArchitectureAdapter(model).unembed_bias is None else ArchitectureAdapter(model).unembed_bias)
            if not ArchitectureAdapter(model).logit_softcap
            else full_logits(model, h)
        ),
        lambda model, h: full_logits_float64(model, h),
    ],
    "check_reward": [
        lambda text, answer: float(
            bool(re.findall(r"-?\d+", text)) and int(re.findall(r"-?\d+", text)[-1]) == int(answer)
        ),
        lambda text, answer: 1.0 if (m := re.search(r"(-?\d+)(?!.*\d)", text, re.S)) and m.group(1) == answer else 0.0,
    ],
    "check_group_advantages": [advantages_vectorised, lambda r, G: advantages(r.double(), G)],
    "check_clipped_loss": [clipped_where, lambda *a, **k: clipped(*a, **k) * 1.0],
    "check_internal_logprobs": [internal_logprobs_hooks, lambda m, b, l: internal_logprobs(m, b, l).double()],
    "check_phase_switch": [
        lambda step, method, s: "internal" if (method == "bupo" and 1 <= step <= s) else "full",
        lambda step, method, s: ["full", "internal"][int(method == "bupo" and step - 1 < s)],
    ],
    "check_layer_kl": [
        lambda a, b: torch.nn.functional.kl_div(
            torch.log_softmax(b, -1), torch.log_softmax(a, -1), log_target=True, reduction="none"
        ).sum(-1),
        lambda a, b: (
            torch.softmax(a.double(), -1) * (torch.log_softmax(a.double(), -1) - torch.log_softmax(b.double(), -1))
        ).sum(-1),
    ],
    "check_hidden_cosine": [
        lambda a, b: (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)),
        lambda a, b: torch.nn.functional.normalize(a, dim=-1).mul(torch.nn.functional.normalize(b, dim=-1)).sum(-1),
    ],
    "check_pass_at_k": [
        lambda n, c, k: 1.0 if n - c < k else 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1))),
        lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, k),
    ],
    "check_bootstrap_interval": [bootstrap_choice, bootstrap_torch],
    "check_sign_flip_test": [sign_flip_bits, sign_flip_numpy],
}

# typical mistakes the battery found, each with words its own hint must contain
MORE_MISTAKES = {
    "check_clipped_loss": [
        (lambda lp, o, a, m, **k: ex._clip_variant(lp, o, a, m, **k, combine="min").float(), "wrong side"),
        (
            lambda lp, o, a, m, **k: clipped(lp, o, a, m, **(k | {"eps_low": k["eps_high"], "eps_high": k["eps_low"]})),
            "swapped",
        ),
    ],
    "check_entropy_change": [
        (entropy_shifted, "one layer out of place"),
        (lambda c, e: (layer_change(c, e),) * 2, "layer change"),
    ],
    "check_internal_policy": [
        (lambda h, E, n=None: torch.softmax((h if n is None else n(h)).float() @ E.float().T, dim=0), "wrong dimension")
    ],
    "check_full_policy_logits": [
        (lambda model, h: h.float() @ ArchitectureAdapter(model).unembed_weight.float().T, "final norm")
    ],
    "check_pass_at_k": [
        (lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 0.0, "n - c < k")
    ],
    "check_sign_flip_test": [(lambda d: sign_flip(d) * 2 ** len(d), "between 0 and 1")],
    "check_layer_kl": [(lambda a, b: layer_kl(a, b) / math.log(2), "bits")],
    "check_internal_logprobs": [
        (internal_logprobs_truncated_no_grad_forward, "does not reach block"),
        (lambda m, b, l: internal_logprobs_normed(m, b, l), "no final norm"),
        (lambda m, b, l: internal_logprobs(m, b, l) + (1 - b.prediction_mask) * -1.0, "prediction_mask"),
    ],
    "check_bootstrap_interval": [
        (bootstrap_normal, "normal approximation"),
        (
            lambda v, confidence=0.95, resamples=2000, seed=0: bootstrap(v, confidence, resamples, None),
            "default_rng(seed)",
        ),
        (
            lambda v, confidence=0.95, resamples=2000, seed=0: bootstrap_half(v, confidence, resamples, seed),
            "resample n values",
        ),
    ],
    "check_group_advantages": [
        (lambda r, G: (r.view(-1, G) - r.view(-1, G).mean(1, keepdim=True)).view(-1) / (r.std() + 1e-6), "WHOLE batch"),
        (lambda r, G: (r.view(-1, G) - r.view(-1, G).mean(1, keepdim=True)).view(-1), "only subtracted the mean"),
    ],
    "check_boundary_layer": [
        (lambda v: boundary([x + 1e-15 if x == 0 else x for x in v]), ">= 0"),
        (lambda v: next((i + 1 for i, x in enumerate(v) if x > 0), None), "STARTS"),
        (lambda v: boundary(v) or 0, "return None"),
    ],
}


def layer_change(capture, entropy):
    L = capture.num_layers
    return torch.stack([entropy(capture.resid(l)) - entropy(capture.resid(l - 1)) for l in range(1, L + 1)])


def internal_logprobs_normed(model, batch, layer):
    a = ArchitectureAdapter(model)
    h = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask)
    logp = torch.log_softmax(a.logits(h, "final"), -1)
    return logp.gather(-1, batch.targets[..., None]).squeeze(-1) * batch.prediction_mask


def bootstrap_half(values, confidence, resamples, seed):
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size // 2))].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def test_alternatives_cover_every_checker():
    assert sorted(ALTERNATIVES) == sorted(CASES) and all(len(v) >= 2 for v in ALTERNATIVES.values())


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(ALTERNATIVES) for i in range(len(ALTERNATIVES[n]))])
def test_alternative_correct_answer_passes(name, index, capsys):
    getattr(ex, name)(ALTERNATIVES[name][index])
    assert "pass" in capsys.readouterr().out


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(MORE_MISTAKES) for i in range(len(MORE_MISTAKES[n]))])
def test_more_typical_mistakes_fail_with_their_own_hint(name, index):
    wrong, words = MORE_MISTAKES[name][index]
    with pytest.raises(AssertionError) as info:
        getattr(ex, name)(wrong)
    assert words in str(info.value), str(info.value)


def test_chunked_entropy_tolerance_scales_with_the_logits_but_still_catches_bits():
    # the three valid formulations differ from float64 by up to ~5e-4 on the peaked case; a 1e-3 shift
    # on an ordinary case is still an error
    with pytest.raises(AssertionError, match="P = 50 random vectors"):
        ex.check_chunked_entropy(lambda x, E, c: chunked_entropy(x, E, c) + 1e-3)


import importlib  # noqa: E402

_entropy, _evaluate, _grpo, _stats, _trainer = (
    importlib.import_module(f"bupo_core.{m}") for m in ("entropy", "evaluate", "grpo", "stats", "trainer")
)

LIBRARY = {
    "check_pass_at_k": [_evaluate.pass_at_k, lambda n, c, k: _evaluate.pass_at_k(n, c, k)],
    "check_bootstrap_interval": [
        lambda v, confidence=0.95, resamples=2000, seed=0: _evaluate.bootstrap_interval(
            v, confidence=confidence, resamples=resamples, seed=seed
        )
    ],
    "check_boundary_layer": [lambda v: _entropy.boundary_layer(v).layer],
    "check_internal_logprobs": [lambda m, b, l: _trainer.policy_logprobs(m, b, layer=l)[0]],
    "check_group_advantages": [lambda r, G: _grpo.group_advantages(r, G)[0]],
    "check_clipped_loss": [lambda *a, **k: _grpo.clipped_policy_loss(*a, **k).loss],
    "check_sign_flip_test": [_stats.sign_flip_test],
    "check_phase_switch": [
        lambda step, method, s: _trainer.TrainConfig(
            method=method, layer=1 if method == "bupo" else None, inter_steps=s
        ).phase(step)
    ],
}


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(LIBRARY) for i in range(len(LIBRARY[n]))])
def test_submitting_the_library_function_is_noticed(name, index):
    with pytest.raises(AssertionError, match="library's own") as info:
        getattr(ex, name)(LIBRARY[name][index])
    assert "written by hand" in str(info.value)


def test_yours_or_library_uses_yours_only_after_it_passed(capsys):
    def mine(n, c, k):
        return 1 - math.comb(n - c, k) / math.comb(n, k)

    assert ex.yours_or_library(mine, ex.check_pass_at_k) is not mine
    assert "has not passed check_pass_at_k" in capsys.readouterr().out
    ex.check_pass_at_k(mine)
    capsys.readouterr()
    assert ex.yours_or_library(mine, ex.check_pass_at_k) is mine and capsys.readouterr().out == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_fallback_passes_its_own_checker(name, monkeypatch):
    """The fallback later cells use is a correct answer (the identity check is off: it IS the library)."""
    monkeypatch.setattr(ex, "_watch_calls", lambda library, used: __import__("contextlib").nullcontext())
    fallback = ex.library_version(name)
    getattr(ex, name)(lambda *a, **k: fallback(*a, **k))
