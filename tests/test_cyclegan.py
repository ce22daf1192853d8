"Tests of the CycleGAN stage (melanet_nb.cyclegan): models, losses, image pool, exact resume, synthesis, bad input."
import inspect, re, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from types import SimpleNamespace
from PIL import Image
from fastai.basics import Callback, CancelFitException
from melanet_nb.data import DataError, read_normalized
from melanet_nb.cyclegan import *


@pytest.mark.parametrize('size', [32, 64, 128, 256])
def test_generator_and_discriminator_shapes(size):
    g, d = UNetGenerator(width=4, depth=4), PatchDiscriminator(width=4)
    x = torch.randn(2, 3, size, size)
    y = g(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert d(x).shape == (2, 1, size // 8 - 2, size // 8 - 2)


def test_bad_sizes_are_reported():
    with pytest.raises(ValueError, match='multiple of 16'): UNetGenerator(width=4)(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match='at least 64'): UNetGenerator(width=4, depth=5)(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='multiple of 16'): CycleGAN(size=100, width=4)


def test_adversarial_and_discriminator_losses():
    z = torch.zeros(1, 1, 3, 3)
    assert adversarial_loss(z, True).item() == pytest.approx(1.)
    assert adversarial_loss(z, False).item() == pytest.approx(0.)
    assert adversarial_loss(z, False, 'log').item() == pytest.approx(np.log(2))
    assert adversarial_loss(torch.tensor([2., 0.]), False).item() == pytest.approx(2.)   # (4 + 0) / 2
    assert discriminator_loss(lambda x: x, torch.ones(4), torch.zeros(4)).item() == pytest.approx(0.)
    assert discriminator_loss(lambda x: x, torch.zeros(4), torch.ones(4)).item() == pytest.approx(1.)
    with pytest.raises(ValueError, match="'lsgan' or 'log'"): adversarial_loss(z, True, 'hinge')


def test_cycle_gan_loss_on_known_tensors():
    zeros = lambda x: torch.zeros(1, 1, 2, 2)
    stub = SimpleNamespace(disc_malignant=zeros, disc_benign=zeros,
                           malignant_to_benign=lambda x: x, benign_to_malignant=lambda x: x + 1)
    benign, malignant = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    pred = CycleOutput(malignant, benign, benign + 0.5, malignant - 0.25)
    lf = CycleGANLoss(stub)                                  # λ = 10, LSGAN
    assert lf(pred, benign, malignant).item() == pytest.approx(1 + 1 + 10 * 0.5 + 10 * 0.25)
    assert lf.cycle_malignant.item() == pytest.approx(2.5)
    assert CycleGANLoss(stub, adv='log', cycle_weight=1.)(pred, benign, malignant).item() == pytest.approx(2 * np.log(2) + 0.75)
    lf = CycleGANLoss(stub, identity_weight=3.)
    assert lf(pred, benign, malignant).item() == pytest.approx(9.5 + 0 + 3 * 1)
    assert lf.identity_malignant.item() == pytest.approx(3.)


def test_image_pool():
    pool = ImagePool(size=5, seed=1)
    first = torch.arange(5.).view(5, 1, 1, 1)
    assert torch.equal(pool(first), first) and len(pool.images) == 5
    new = torch.arange(100., 300.).view(200, 1, 1, 1)
    out = pool(new)
    assert out.shape == new.shape and len(pool.images) == 5
    swapped = (out != new).sum().item()
    assert 60 < swapped < 140                                # p = 1/2 of drawing from the history
    assert set(out[out != new].tolist()) <= set(range(0, 300))   # history images are earlier inputs
    state = pool.state_dict(); a = pool(new)
    other = ImagePool(size=5, seed=99); other.load_state_dict(state)
    assert torch.equal(other(new), a)
    assert torch.equal(ImagePool(size=0)(new), new)
    assert not pool(torch.ones(1, 1, 1, 1, requires_grad=True)).requires_grad


def _domains(tmp_path, n_benign=4, n_malignant=4, size=32):
    rng, rows = np.random.default_rng(0), []
    for label, n, base in (('benign', n_benign, 80), ('malignant', n_malignant, 170)):
        for i in range(n):
            p = tmp_path/f'{label}{i}.png'
            Image.fromarray((base + rng.integers(-40, 40, (size + 8, size, 3))).clip(0, 255).astype(np.uint8)).save(p)
            rows.append(dict(image_id=f'{label}{i}', path=str(p), label=label, split='train', source='toy'))
    return pd.DataFrame(rows)


class StopAfter(Callback):
    "Simulate an interruption after `n` epochs."
    order = 99
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch + 1 >= self.n: raise CancelFitException()


KW = dict(size=32, epochs=3, width=4, disc_width=4, ckpt_every=1, pool_size=2)


def test_resume_equals_uninterrupted_run(tmp_path):
    df = _domains(tmp_path)
    benign, malignant = df[df.label == 'benign'], df[df.label == 'malignant']
    whole = train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'a', **KW)
    train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'b', cbs=StopAfter(2), **KW)
    assert [p.name for p in list_checkpoints(tmp_path/'b')] == ['cyclegan_epoch0001.pth', 'cyclegan_epoch0002.pth']
    assert not list((tmp_path/'b').glob('.*tmp*'))          # no temporary file left behind
    resumed = train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'b', **KW)
    assert len(whole.recorder.values) == 3
    assert resumed.recorder.values == whole.recorder.values  # every loss term of every epoch, exactly
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()): assert torch.equal(a, b)
    assert resumed.epochs_done == 3 and resumed.checkpoint.name == 'cyclegan_epoch0003.pth'
    # a finished run resumed again trains nothing and keeps its weights
    again = train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'b', **KW)
    for a, b in zip(whole.model.state_dict().values(), again.model.state_dict().values()): assert torch.equal(a, b)
    with pytest.raises(ValueError, match='trained at 32 px but size=64'):
        train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'b', **{**KW, 'size': 64})



@pytest.mark.parametrize('identity_weight', [0., 5.])
def test_directions_in_parallel_train_like_in_sequence(tmp_path, identity_weight):
    "Two threads (one direction each) give the losses and weights of one thread, up to float rounding; runs repeat exactly."
    if torch.get_num_threads() < 2: pytest.skip('needs 2 torch threads')
    df = _domains(tmp_path)
    benign, malignant = df[df.label == 'benign'], df[df.label == 'malignant']
    kw = {**KW, 'epochs': 2, 'identity_weight': identity_weight}
    runs = [train_cyclegan(benign, malignant, parallel=p, **kw) for p in (True, False, True)]
    assert runs[0].model.in_parallel and not runs[1].model.in_parallel
    assert runs[0].recorder.values == runs[2].recorder.values   # the threads' order does not change a bit
    np.testing.assert_allclose(np.array(runs[0].recorder.values, dtype=float), np.array(runs[1].recorder.values, dtype=float), rtol=1e-4)
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert CycleGAN(size=32, width=4, dropout=0.5).in_parallel is False   # dropout's draws would depend on the threads' order

def test_bad_domains(tmp_path):
    df = _domains(tmp_path, 2, 2)
    benign, malignant = df[df.label == 'benign'], df[df.label == 'malignant']
    with pytest.raises(DataError, match='benign domain is empty'): train_cyclegan(benign.iloc[:0], malignant, **KW)
    with pytest.raises(DataError, match='malignant domain is empty'):
        train_cyclegan(benign, malignant.assign(split='valid'), **KW)
    with pytest.raises(DataError, match="label is not 'benign'"): train_cyclegan(df, malignant, **KW)


def test_synthesize_counts_and_provenance(tmp_path):
    df = _domains(tmp_path, n_benign=6, n_malignant=2)
    held_out = df[df.label == 'benign'].assign(split='test', image_id=lambda d: 'test_' + d.image_id)
    table = pd.concat([df, held_out], ignore_index=True)
    learn = train_cyclegan(df[df.label == 'benign'], df[df.label == 'malignant'], ckpt_dir=tmp_path/'ck', **{**KW, 'epochs': 1})
    out = synthesize(learn, table, tmp_path/'synth')
    assert len(out) == 6 - 2                                 # exactly enough to balance the training split
    assert list(out.columns) == ['image_id', 'path', 'label', 'split', 'source', 'source_id', 'checkpoint', 'epoch']
    assert set(out.split) == {'train'} and set(out.label) == {'malignant'} and set(out.source) == {'synthetic'}
    assert set(out.source_id) <= set(df.image_id[df.label == 'benign'])   # never a test image
    assert all(Path(p).is_file() for p in out.path)
    assert Image.open(out.path[0]).size == (32, 32)
    back = read_normalized(tmp_path/'synth')
    assert sorted(back.image_id) == sorted(out.image_id) and set(back.split) == {'train'}
    prov = pd.read_csv(tmp_path/'synth'/'provenance.csv')
    assert list(prov.columns) == ['image_id', 'source_id', 'checkpoint', 'epoch']
    assert set(prov.epoch) == {1} and prov.checkpoint.str.endswith('cyclegan_epoch0001.pth').all()
    # from the checkpoint file, all benign, an explicit count, n_malignant given
    ck = list_checkpoints(tmp_path/'ck')[-1]
    assert len(synthesize(ck, table, tmp_path/'all', n='all')) == 6
    assert len(synthesize(ck, table, tmp_path/'three', n=3)) == 3
    assert len(synthesize(ck, df[df.label == 'benign'], tmp_path/'nm', n_malignant=5)) == 1
    # the same model translates the same image the same way: from Learner or from checkpoint
    a = synthesize(learn, table, tmp_path/'x1', n=1, seed=3); b = synthesize(ck, table, tmp_path/'x2', n=1, seed=3)
    assert np.array_equal(np.asarray(Image.open(a.path[0])), np.asarray(Image.open(b.path[0])))
    with pytest.raises(ValueError, match='cannot synthesize 7'): synthesize(ck, table, tmp_path/'bad', n=7)
    with pytest.raises(ValueError, match='trained at 32 px'): synthesize(ck, table, tmp_path/'bad', size=64)
    assert not (tmp_path/'bad').exists()


SHARED_DATA = Path(__file__).resolve().parents[2]/'shared'/'data'


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA/'isic2016').is_dir(), reason='../shared/data/isic2016 is missing')
def test_real_isic2016_domains_train_and_synthesize(tmp_path):
    "The stage reads the real ISIC 2016 layout: a few balanced domain images, one tiny epoch, two synthetic images."
    from melanet_nb.data import read_dataset, balanced_domains
    df = read_dataset(SHARED_DATA/'isic2016')
    benign, malignant = balanced_domains(df)
    assert len(benign) == len(malignant) == (df[df.split == 'train'].label == 'malignant').sum()
    learn = train_cyclegan(benign.iloc[:4], malignant.iloc[:4], ckpt_dir=tmp_path/'ck', **{**KW, 'epochs': 1})
    out = synthesize(learn, df, tmp_path/'synth', n=2)
    assert len(out) == 2 and set(out.source_id) <= set(df.image_id[(df.split == 'train') & (df.label == 'benign')])


def test_train_cyclegan_signature_holds_the_defaults():
    "The pipeline reads its CycleGAN defaults from this signature; the `CycleGAN` arguments show there via @delegates."
    params = inspect.signature(train_cyclegan).parameters
    assert {'epochs', 'width', 'identity_weight', 'ckpt_every', 'size', 'disc_width'} <= set(params)
    assert params['width'].default == inspect.signature(CycleGAN).parameters['width'].default
    assert params['identity_weight'].default == 0      # the paper's objective
    assert 'kwargs' not in params and 'identity_weight' in inspect.signature(cyclegan_learner).parameters


def test_bad_checkpoint_files_are_named(tmp_path):
    torch.save({'weights': 1}, checkpoint_path(tmp_path, 1))
    (tmp_path/'cyclegan_epoch0002.pth').write_text('not a torch file')
    with pytest.raises(DataError, match='cyclegan_epoch0001.pth: not a melanet_nb CycleGAN checkpoint'):
        read_checkpoint(checkpoint_path(tmp_path, 1))
    with pytest.raises(DataError, match=re.escape('cyclegan_epoch0002.pth: not a melanet_nb CycleGAN checkpoint, written by save_checkpoint (cannot read it')): read_checkpoint(checkpoint_path(tmp_path, 2))
    with pytest.raises(DataError, match='missing.pth: melanet_nb CycleGAN checkpoint not found'): read_checkpoint(tmp_path/'missing.pth')
    with pytest.raises(DataError, match='not a melanet_nb'): synthesize(checkpoint_path(tmp_path, 1), pd.DataFrame(), tmp_path/'s')


def test_synthesize_from_learner_without_checkpoints(tmp_path):
    df = _domains(tmp_path, n_benign=3, n_malignant=1)
    learn = train_cyclegan(df[df.label == 'benign'], df[df.label == 'malignant'], **{**KW, 'epochs': 2})
    out = synthesize(learn, df, tmp_path/'synth')
    assert len(out) == 2 and set(out.epoch) == {2} and out.checkpoint.isna().all()


def test_checkpoint_with_fastai_adam_state_is_refused_for_resume_but_synthesizes(tmp_path):
    "Checkpoints written before torch's fused Adam (fastai's optimizer state) cannot continue training; their weights still work."
    df = _domains(tmp_path)
    benign, malignant = df[df.label == 'benign'], df[df.label == 'malignant']
    kw = {**KW, 'epochs': 1}
    train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'c', **kw)
    ckpt = list_checkpoints(tmp_path/'c')[-1]
    state = torch.load(ckpt, weights_only=False)
    state['opt_generators'] = dict(state=[], hypers=[])          # the layout of fastai's Optimizer.state_dict()
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match='older melanet_nb'): train_cyclegan(benign, malignant, ckpt_dir=tmp_path/'c', **{**kw, 'epochs': 2})
    assert len(synthesize(ckpt, df, tmp_path/'synth', n=1)) == 1
