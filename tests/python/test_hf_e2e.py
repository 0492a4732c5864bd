"""End to end with Hugging Face transformers on a GPU: a trainer model takes AdamW steps in bf16 and syncs
every parameter through deltasync.Sender after each step; a second instance attached to deltasync.Receiver
must then hold bit-equal parameters and generate the same greedy tokens. Then the same through load_weights
into an engine whose q/k/v projections are views of one fused qkv tensor. Skipped without transformers or
without a CUDA device."""
import pytest

from conftest import bits, deltasync, torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and deltasync.gpu_available()),
                                reason="no CUDA device (or GPU support not built)")

STEPS = 6


def make_model(seed):
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


def train_step(model, opt, g):
    ids = torch.randint(0, 512, (4, 32), device="cuda", generator=g)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


def greedy(model, prompt):
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)


def test_llama_trainer_to_rollout(tmp_path):
    trainer, rollout = make_model(1), make_model(2)
    rollout.load_state_dict(trainer.state_dict())  # the rollout starts from the trainer's base weights
    opt = torch.optim.AdamW(trainer.parameters(), lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(0)
    prompt = torch.randint(0, 512, (2, 8), device="cuda", generator=g)
    d = str(tmp_path / "deltas")
    with deltasync.Receiver(dict(rollout.named_parameters()), d) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer.named_parameters())
        for v in range(1, STEPS + 1):
            train_step(trainer, opt, g)
            rep = s.sync(v, trainer.named_parameters())
            assert rep["snapshot_advanced"] and rep["changed_elements"] > 0
            torch.cuda.synchronize()
            for (n, a), (m, b) in zip(trainer.named_parameters(), rollout.named_parameters()):
                assert n == m and torch.equal(bits(a), bits(b)), n
            assert torch.equal(greedy(trainer, prompt), greedy(rollout, prompt))
        assert rx.version == STEPS


def test_llama_fused_qkv_load_weights(tmp_path):
    trainer, engine = make_model(3), make_model(4)
    engine.load_state_dict(trainer.state_dict())
    # The engine's q/k/v projections become views of one fused tensor per layer, as inference engines hold them.
    fused, rows = {}, {}
    for i, layer in enumerate(engine.model.layers):
        a = layer.self_attn
        qkv = torch.cat([a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data]).contiguous()
        fused[i] = qkv
        off = 0
        for part in ("q_proj", "k_proj", "v_proj"):
            w = getattr(a, part).weight
            n = w.shape[0]
            getattr(a, part).weight = torch.nn.Parameter(qkv[off:off + n], requires_grad=False)
            rows["model.layers.%d.self_attn.%s.weight" % (i, part)] = (i, off, off + n)
            off += n
    params = dict(engine.named_parameters())
    loads = []

    def load_weights(pairs):
        for name, t in pairs:
            loads.append(name)
            if name in rows:
                i, a, b = rows[name]
                fused[i][a:b].copy_(t, non_blocking=False)
            else:
                params[name].data.copy_(t)

    opt = torch.optim.AdamW(trainer.parameters(), lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, 512, (2, 8), device="cuda", generator=g)
    d = str(tmp_path / "deltas")
    ckpt = {n: p.detach() for n, p in trainer.named_parameters()}
    with deltasync.Receiver(ckpt, d, load_weights=load_weights) as rx, deltasync.Sender(d, push=[rx.url]) as s:
        s.seed_all(trainer.named_parameters())
        for v in range(1, STEPS + 1):
            loads.clear()
            train_step(trainer, opt, g)
            s.sync(v, trainer.named_parameters())
            assert any(n in rows for n in loads)
            torch.cuda.synchronize()
            for n, p in trainer.named_parameters():
                assert torch.equal(bits(p), bits(dict(engine.named_parameters())[n])), n
            assert torch.equal(greedy(trainer, prompt), greedy(engine, prompt))
