"""Small versions of the models people convert, each as ``(name, fn, make_args)``.

``fn`` is a pure JAX function of arrays (parameters and PRNG key data included, so the
converted TF function takes them as inputs); ``make_args()`` builds its inputs. Train
steps return the updated parameters (and optimizer state), so comparing outputs compares
parameters after one step. Shared by tests/test_models.py and benchmarks/.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _key(seed=0):
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def _init(module, *args, **kw):
    return jax.tree_util.tree_map(np.asarray, module.init(jax.random.key(1), *args, **kw))


# -- MLP --------------------------------------------------------------------------------------
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.gelu(nn.Dense(32)(x))
        return nn.log_softmax(nn.Dense(10)(x))


def mlp_linen():
    x = _x(4, 16)
    params = _init(MLP(), x)
    return jax.jit(MLP().apply), (params, x)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(16, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.silu(self.l1(x)))


def _nnx_apply(model):
    """``apply(state_leaves, *inputs, **kw)`` calling ``model`` rebuilt from its state's
    leaves: tf.function only passes dicts, lists and tuples through, not nnx.State."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree_util.tree_flatten(state)

    def apply(leaves, *inputs, **kw):
        return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))(*inputs, **kw)
    return apply, [np.asarray(v) for v in leaves]


def mlp_nnx():
    apply, leaves = _nnx_apply(NnxMLP(nnx.Rngs(0)))
    return apply, (leaves, _x(4, 16))


# -- CNN with BatchNorm and Dropout -------------------------------------------------------------
class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(16, (3, 3), strides=(2, 2))(x)
        x = nn.avg_pool(nn.relu(x), (2, 2), strides=(1, 1), padding="SAME")
        x = nn.Dropout(0.5, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(10)(x)


def _cnn_vars():
    x = _x(2, 12, 12, 3)
    return _init(CNN(), x, train=False), x


def cnn_eval():
    variables, x = _cnn_vars()
    return (lambda v, x: CNN().apply(v, x, train=False)), (variables, x)


def cnn_train():
    variables, x = _cnn_vars()

    def step(v, x, key_data):
        key = jax.random.wrap_key_data(key_data)
        out, updates = CNN().apply(v, x, train=True, rngs={"dropout": key},
                                   mutable=["batch_stats"])
        return out, updates
    return step, (variables, x, _key(3))


# -- ResNet-style blocks ------------------------------------------------------------------------
class Block(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x, train):
        y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x)  # projection
        return nn.relu(x + y)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = Block(8, 1)(x, train)
        x = Block(16, 2)(x, train)
        return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))


def _resnet():
    x = _x(2, 8, 8, 3)
    return _init(ResNet(), x), x


def resnet_eval():
    v, x = _resnet()
    return ResNet().apply, (v, x)


def resnet_train_sgd():
    v, x = _resnet()
    labels = np.array([1, 3], np.int32)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = jax.tree_util.tree_map(np.asarray, tx.init(v["params"]))

    def step(v, opt_state, x, labels):
        def loss_fn(params):
            logits, upd = ResNet().apply({**v, "params": params}, x, train=True,
                                         mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, upd
        (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(v["params"])
        updates, opt_state = tx.update(grads, opt_state, v["params"])
        return loss, optax.apply_updates(v["params"], updates), opt_state, upd
    return step, (v, opt_state, x, labels)


# -- Transformer encoder layer, tiny GPT ----------------------------------------------------------
class EncoderLayer(nn.Module):
    dim: int = 16
    heads: int = 2
    attn_bias: bool = True

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(self.heads, dropout_rate=0.1, use_bias=self.attn_bias,
                                            deterministic=not train)(h, h, mask=mask)
        x = x + nn.Dropout(0.1, deterministic=not train)(h)
        h = nn.Dense(4 * self.dim)(nn.LayerNorm()(x))
        return x + nn.Dense(self.dim)(nn.gelu(h))


def transformer_train():
    x = _x(2, 6, 16)
    v = _init(EncoderLayer(), x, train=False)

    def fwd(v, x, key_data):
        return EncoderLayer().apply(v, x, train=True,
                                    rngs={"dropout": jax.random.wrap_key_data(key_data)})
    return fwd, (v, x, _key(5))


class GPT(nn.Module):
    vocab: int = 20
    dim: int = 16

    @nn.compact
    def __call__(self, tokens):
        emb = nn.Embed(self.vocab, self.dim)
        pos = self.param("pos", nn.initializers.normal(0.02), (tokens.shape[1], self.dim))
        x = emb(tokens) + pos
        mask = nn.make_causal_mask(tokens)
        # no attention biases: the key bias has an exactly-zero gradient, so AdamW would turn
        # rounding noise (which differs even between jax.jit and JAX's eager mode) into a
        # full-size update
        x = EncoderLayer(self.dim, attn_bias=False)(x, False, mask)
        return emb.attend(nn.LayerNorm()(x))


def gpt_train_adamw():
    tokens = RNG.integers(0, 20, (2, 8)).astype(np.int32)
    params = _init(GPT(), tokens[:, :-1])["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1))
    opt_state = jax.tree_util.tree_map(np.asarray, tx.init(params))

    def step(params, opt_state, tokens):
        def loss_fn(p):
            logits = GPT().apply({"params": p}, tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state
    return step, (params, opt_state, tokens)


def kv_cache_decode():
    """One decode step: write this token's key/value into the cache at ``pos``, attend."""
    heads, dim, max_len = 2, 8, 6
    wq, wk, wv = (_x(dim, heads * dim) * 0.3 for _ in range(3))
    k_cache = _x(1, max_len, heads, dim)
    v_cache = _x(1, max_len, heads, dim)
    x = _x(1, dim)

    def step(wq, wk, wv, k_cache, v_cache, x, pos):
        q = (x @ wq).reshape(1, heads, dim)
        k_cache = jax.lax.dynamic_update_slice(k_cache, (x @ wk).reshape(1, 1, heads, dim),
                                               (0, pos, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, (x @ wv).reshape(1, 1, heads, dim),
                                               (0, pos, 0, 0))
        scores = jnp.einsum("bhd,bthd->bht", q, k_cache) / np.sqrt(dim)
        scores = jnp.where(jnp.arange(max_len) <= pos, scores, -jnp.inf)
        out = jnp.einsum("bht,bthd->bhd", jax.nn.softmax(scores, axis=-1), v_cache)
        return out, k_cache, v_cache
    return step, (wq, wk, wv, k_cache, v_cache, x, np.int32(3))


# -- jax.nn.dot_product_attention, XLA implementation ---------------------------------------------
# q: [batch, T, heads, dim], k/v: [batch, S, kv_heads, dim]; fewer kv heads is GQA (1: MQA).
def _dpa(**kw):
    return functools.partial(jax.nn.dot_product_attention, implementation="xla", **kw)


def _qkv(kv_heads, t=5, s=7, heads=4, dim=8):
    return _x(2, t, heads, dim), _x(2, s, kv_heads, dim), _x(2, s, kv_heads, dim)


def attention_plain():
    return _dpa(), _qkv(kv_heads=4)


def attention_gqa_causal():
    return _dpa(is_causal=True, scale=0.2), _qkv(kv_heads=2, t=6, s=6)


def attention_bias_mask():
    """Bias per head, a boolean mask broadcast over heads, one query row fully masked."""
    mask = RNG.random((2, 1, 5, 7)) < 0.7
    mask[0, 0, 1] = False
    return _dpa(), (*_qkv(kv_heads=2), _x(2, 4, 5, 7), mask)


def attention_seq_lengths_window():
    """Padding by sequence lengths and a local window, one kv head (MQA), no batch axis
    in the bias."""
    def f(q, k, v, bias, q_len, kv_len):
        return _dpa(local_window_size=(2, 1))(q, k, v, bias, query_seq_lengths=q_len,
                                               key_value_seq_lengths=kv_len)
    return f, (*_qkv(kv_heads=1), _x(5, 7), np.array([3, 5], np.int32), np.array([7, 2], np.int32))


def attention_nnx():
    """flax.nnx.MultiHeadAttention without dropout calls jax.nn.dot_product_attention."""
    model = nnx.MultiHeadAttention(num_heads=4, in_features=16, qkv_features=32, decode=False,
                                   rngs=nnx.Rngs(0))
    apply, leaves = _nnx_apply(model)
    mask = np.asarray(nnx.make_causal_mask(np.ones((2, 6))))
    return (lambda leaves, q, kv, mask: apply(leaves, q, kv, mask=mask)), (
        leaves, _x(2, 6, 16), _x(2, 6, 16), mask)


def attention_bfloat16():
    """bfloat16 attention: the logits' dot_general asks for DotAlgorithmPreset.BF16_BF16_F32.
    Not in MODELS (float32 model tolerance); used by tests/test_models.py."""
    return _dpa(is_causal=True), tuple(a.astype(jnp.bfloat16) for a in _qkv(kv_heads=2, t=6, s=6))


# -- recurrent ------------------------------------------------------------------------------------
def _rnn(cell):
    x = _x(2, 5, 4)
    model = nn.RNN(cell)
    return model.apply, (_init(model, x), x)


def lstm():
    return _rnn(nn.LSTMCell(8))


def gru():
    return _rnn(nn.GRUCell(8))


class ScanStack(nn.Module):
    @nn.compact
    def __call__(self, x):
        class Layer(nn.Module):
            @nn.compact
            def __call__(self, c, _):
                return jnp.tanh(nn.Dense(8)(c)), None
        Stack = nn.scan(nn.remat(Layer), variable_axes={"params": 0},
                        split_rngs={"params": True}, length=3)
        return Stack()(x, None)[0]


def scan_remat_grad():
    x = _x(2, 8)
    v = _init(ScanStack(), x)
    return jax.grad(lambda v, x: jnp.sum(ScanStack().apply(v, x) ** 2)), (v, x)


# -- U-Net --------------------------------------------------------------------------------------
class UNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        d1 = nn.swish(nn.GroupNorm(num_groups=2)(nn.Conv(8, (3, 3))(x)))
        d2 = nn.swish(nn.GroupNorm(num_groups=4)(nn.Conv(16, (3, 3), strides=(2, 2))(d1)))
        u1 = nn.ConvTranspose(8, (2, 2), strides=(2, 2))(d2)
        u1 = jnp.concatenate([u1, d1], axis=-1)
        out = nn.Conv(3, (3, 3))(u1)
        return jax.image.resize(out, (x.shape[0], 12, 12, 3), "bilinear")


def unet():
    x = _x(1, 8, 8, 3)
    return UNet().apply, (_init(UNet(), x), x)


# -- per-example gradients, sampling loop ---------------------------------------------------------
def per_example_grads():
    w = _x(4, 3)
    xs, ys = _x(5, 4), _x(5, 3)
    loss = lambda w, x, y: jnp.sum((jnp.tanh(x @ w) - y) ** 2)
    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)), (w, xs, ys)


def top_p_sampling():
    logits_w = _x(6, 10)

    def sample(w, key_data):
        key = jax.random.wrap_key_data(key_data)

        def cond(state):
            i, _, _ = state
            return i < 5

        def body(state):
            i, tok, key = state
            key, sub = jax.random.split(key)
            logits = w[tok % 6]
            probs = jax.nn.softmax(logits)
            order = jnp.argsort(-probs)
            cum = jnp.cumsum(probs[order])
            keep = cum - probs[order] < 0.9
            filtered = jnp.where(keep, logits[order], -jnp.inf)
            choice = jax.random.categorical(sub, filtered)
            return i + 1, order[choice].astype(jnp.int32), key
        _, tok, _ = jax.lax.while_loop(cond, body, (0, jnp.int32(0), key))
        return tok
    return sample, (logits_w, _key(9))


def random_sampling():
    def f(key_data):
        k = jax.random.wrap_key_data(key_data)
        k1, k2, k3, k4, k5 = jax.random.split(k, 5)
        return (jax.random.uniform(k1, (3,)), jax.random.normal(k2, (4,)),
                jax.random.truncated_normal(k3, -1.0, 1.0, (3,)),
                jax.random.bernoulli(k4, 0.3, (6,)), jax.random.permutation(k5, 7),
                jax.random.choice(k5, 10, (3,), replace=False),
                jax.random.categorical(k1, jnp.log(jnp.arange(1.0, 5.0))))
    return f, (_key(11),)


MODELS = {f.__name__: f for f in [
    mlp_linen, mlp_nnx, cnn_eval, cnn_train, resnet_eval, resnet_train_sgd, transformer_train,
    gpt_train_adamw, kv_cache_decode, lstm, gru, scan_remat_grad, unet, per_example_grads,
    top_p_sampling, random_sampling, attention_plain, attention_gqa_causal, attention_bias_mask,
    attention_seq_lengths_window, attention_nnx]}
