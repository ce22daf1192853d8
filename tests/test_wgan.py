"Tests of the WGAN-GP stage (melanet_nb.wgan): networks, penalty, training callbacks, exact resume, synthesis, bad input."
import re, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from PIL import Image
from melanet_nb.data import DataError, read_normalized, make_demo_dataset, read_dataset, LABELS
from melanet_nb.wgan import *
from melanet_nb.evaluation import synthetic_set_checks, mean_pairwise_distance, kid_yardstick, CHECK_COLUMNS

TINY = dict(size=32, bs=4, width=4, nz=8)


@pytest.fixture(scope='module')
def table(tmp_path_factory):
    "16 demo training rows (8 per class) plus the rest of a small demo set."
    df = read_dataset(make_demo_dataset(tmp_path_factory.mktemp('demo')/'d', n=60, size=32, seed=1))
    train = pd.concat([df[(df.split == 'train') & (df.label == l)].head(8) for l in LABELS])
    return pd.concat([train, df[df.split != 'train']], ignore_index=True)


@pytest.mark.parametrize('size', [16, 32, 64, 128])
def test_generator_and_critic_shapes(size):
    g, c = ConditionalGenerator(3, size, nz=8, width=4), ProjectionCritic(3, size, width=4)
    x = g(torch.randn(2, 8), torch.tensor([0, 2]))
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1
    assert c(x, torch.tensor([0, 2])).shape == (2,)


def test_bad_sizes_and_no_batch_norm():
    for bad in (100, 8, 0, '64'):
        with pytest.raises(ValueError, match='power of two'): WGAN(size=bad)
    with pytest.raises(ValueError, match='built for 32 px'): ProjectionCritic(2, 32, 4)(torch.zeros(1, 3, 64, 64), torch.tensor([0]))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in WGAN(size=32, width=4).modules())


def test_label_changes_the_image_and_the_score():
    torch.manual_seed(0)
    g, c = ConditionalGenerator(2, 32, nz=8, width=4), ProjectionCritic(2, 32, width=4)
    z = torch.randn(1, 8)
    assert not torch.allclose(g(z, torch.tensor([0])), g(z, torch.tensor([1])))
    x = torch.rand(1, 3, 32, 32)
    torch.nn.init.normal_(c.embed.weight)
    assert not torch.allclose(c(x, torch.tensor([0])), c(x, torch.tensor([1])))


def test_gradient_penalty_of_a_linear_critic():
    class Lin(torch.nn.Module):
        def __init__(self, v): super().__init__(); self.v = v
        def forward(self, x, labels): return (x.flatten(1) * self.v).sum(1)
    v = torch.randn(48); v = v / v.norm()
    real, fake, lab = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4), torch.zeros(6, dtype=torch.long)
    gp, norms = gradient_penalty(Lin(v), real, fake, lab)
    assert torch.allclose(norms, torch.ones(6), atol=1e-5) and gp.item() == pytest.approx(0, abs=1e-8)
    assert gradient_penalty(Lin(2 * v), real, fake, lab)[0].item() == pytest.approx(1., abs=1e-4)


def test_standard_settings_are_the_defaults():
    assert (GP_WEIGHT, N_CRITIC, WGAN_LR, WGAN_BETAS) == (10., 5, 1e-4, (0., 0.9))
    opt = wgan_opt(list(torch.nn.Linear(2, 2).parameters()), lr=WGAN_LR)
    assert opt.hypers[0]['mom'] == 0. and opt.hypers[0]['sqr_mom'] == 0.9 and opt.hypers[0]['wd'] == 0.


def test_noise_is_reproducible_per_index():
    assert torch.equal(wgan_noise(3, [7], 16)[0], wgan_noise(3, [1, 7, 9], 16)[1])
    assert not torch.equal(wgan_noise(3, [7], 16), wgan_noise(4, [7], 16))
    assert wgan_noise(0, [], 5).shape == (0, 5)


def test_train_logs_checkpoints_samples(table, tmp_path):
    learn = train_wgan(table, tmp_path, epochs=2, n_critic=2, ckpt_every=1, sample_every=1, **TINY)
    hist = pd.read_csv(tmp_path/'losses.csv')
    assert hist.columns.tolist() == LOSS_COLUMNS and hist.epoch.tolist() == [1, 2]
    assert hist.critic_steps.tolist() == [4, 4] and hist.generator_steps.tolist() == [2, 2]
    assert hist[['critic_loss', 'generator_loss', 'wasserstein', 'grad_norm']].notna().all().all()
    assert [p.name for p in list_wgan_checkpoints(tmp_path)] == ['wgan_epoch0001.pth', 'wgan_epoch0002.pth']
    assert sorted(p.name for p in (tmp_path/'samples').iterdir()) == ['epoch0001.png', 'epoch0002.png']
    assert learn.vocab == LABELS and learn.generator_steps == 4
    assert not list(tmp_path.glob('.*tmp*'))   # nothing half-written


def _weights(learn): return torch.cat([p.detach().flatten() for p in learn.model.parameters()])

def test_exact_resume(table, tmp_path):
    kw = dict(TINY, n_critic=2, ckpt_every=1, sample_every=100)
    straight = train_wgan(table, tmp_path/'a', epochs=3, **kw)
    train_wgan(table, tmp_path/'b', epochs=1, **kw)
    resumed = train_wgan(table, tmp_path/'b', epochs=3, **kw)
    assert resumed.resume_epoch == 1
    assert torch.allclose(_weights(straight), _weights(resumed), atol=1e-6)
    pd.testing.assert_frame_equal(losses_table(straight), losses_table(resumed), atol=1e-5)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path/'a'/'losses.csv'), pd.read_csv(tmp_path/'b'/'losses.csv'), atol=1e-5)
    again = train_wgan(table, tmp_path/'b', epochs=3, **kw)   # finished: nothing more to train
    assert torch.equal(_weights(again), _weights(resumed))


def test_resume_refuses_other_size_classes_settings(table, tmp_path):
    train_wgan(table, tmp_path, epochs=1, **TINY)
    ckpt = str(list_wgan_checkpoints(tmp_path)[-1])
    with pytest.raises(DataError, match=f'{ckpt}.*trained at 32 px but size=64'): train_wgan(table, tmp_path, epochs=2, **{**TINY, 'size': 64})
    with pytest.raises(DataError, match='trained on 2 classes but the table has 3'): train_wgan(table, tmp_path, epochs=2, target='diagnosis', **TINY)
    with pytest.raises(ValueError, match="'gp_weight': \\(10.0, 5.0\\)"): train_wgan(table, tmp_path, epochs=2, gp_weight=5., **TINY)
    with pytest.raises(ValueError, match="'seed'"): train_wgan(table, tmp_path, epochs=2, seed=1, **TINY)
    with pytest.warns(UserWarning, match='starting afresh'): train_wgan(table, tmp_path, epochs=1, resume=False, **{**TINY, 'size': 16})


def test_bad_training_tables(table):
    with pytest.raises(DataError, match='outside the vocabulary'):
        train_wgan(table.assign(label=table.label.replace('benign', 'naevus')), None, epochs=1, **TINY)
    with pytest.raises(DataError, match=r"\['malignant'\].*no training image"):
        train_wgan(table[table.label == 'benign'], None, epochs=1, **TINY)
    with pytest.raises(DataError, match="no rows of split 'train'"): train_wgan(table[table.split != 'train'], None, epochs=1, **TINY)
    with pytest.raises(DataError, match='empty'): train_wgan(table.head(0), None, epochs=1, **TINY)


def test_synthesis_layout_provenance_and_reproduction(table, tmp_path):
    learn = train_wgan(table, tmp_path/'ckpt', epochs=1, n_critic=2, **TINY)
    rows = synthesize_wgan(learn, tmp_path/'syn', n=5, seed=3)
    back = read_normalized(tmp_path/'syn', source='synthetic')
    assert back.label.tolist() == ['malignant'] * 5 and set(back.split) == {'train'}
    prov = pd.read_csv(tmp_path/'syn'/'provenance.csv')
    assert {'seed', 'noise_index', 'checkpoint', 'epoch', 'class'} <= set(prov.columns)
    assert prov.noise_index.tolist() == list(range(5)) and Path(prov.checkpoint[0]).name == 'wgan_epoch0001.pth'
    assert all(Image.open(p).size == (32, 32) for p in rows.path)
    # provenance is enough to draw an image again, from the exported generator or the checkpoint
    export_wgan_generator(prov.checkpoint[0], tmp_path/'G.pth')
    g, meta = load_wgan_generator(tmp_path/'G.pth')
    assert meta['vocab'] == LABELS and meta['size'] == 32 and meta['epoch'] == 1
    img = generate(g, [LABELS.index('malignant')], seed=3, indices=[2])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(img, np.asarray(Image.open(back.set_index('image_id').path['wgan_s3_00002'])))
    assert synthesize_wgan(tmp_path/'G.pth', tmp_path/'syn', n=2).image_id.tolist() == ['wgan_s42_00000', 'wgan_s42_00001']
    assert len(read_normalized(tmp_path/'syn')) == 2   # replaced as a whole


def test_synthesis_bad_requests(table, tmp_path):
    learn = train_wgan(table, None, epochs=1, **TINY)
    with pytest.raises(ValueError, match='max_n=4'): synthesize_wgan(learn, tmp_path/'s', n=5, max_n=4)
    with pytest.raises(ValueError, match='max_n=5000'): synthesize_wgan(learn, tmp_path/'s', n=MAX_SYNTHETIC + 1)
    with pytest.raises(ValueError, match='number of images'): synthesize_wgan(learn, tmp_path/'s', n='balance')
    with pytest.raises(DataError, match="'melanoma' is not one"): synthesize_wgan(learn, tmp_path/'s', n=1, cls='melanoma')
    assert not (tmp_path/'s').exists()
    (tmp_path/'junk.pth').write_bytes(b'not a model')
    with pytest.raises(DataError, match='junk.pth: not a WGAN generator file'): load_wgan_generator(tmp_path/'junk.pth')
    with pytest.raises(DataError, match='not found'): load_wgan_generator(tmp_path/'missing.pth')
    with pytest.raises(DataError, match=re.escape('junk.pth: not a melanet_nb WGAN checkpoint, written by save_wgan_checkpoint (cannot read it')): read_wgan_checkpoint(tmp_path/'junk.pth')


def test_diagnosis_conditioning_draws_melanomas(table, tmp_path):
    learn = train_wgan(table, None, epochs=1, target='diagnosis', **TINY)
    assert learn.vocab == ['nevus', 'melanoma', 'seborrheic_keratosis']
    synthesize_wgan(learn, tmp_path/'syn', n=2)
    back = read_normalized(tmp_path/'syn')
    assert back.label.tolist() == ['malignant'] * 2 and back.diagnosis.tolist() == ['melanoma'] * 2


def test_synthetic_set_checks_pass_and_fail():
    rng = np.random.default_rng(0)
    held, benign, malignant = rng.normal(1, 1, (60, 8)), rng.normal(0, 1, (150, 8)), rng.normal(1, 1, (80, 8))
    good, collapsed = rng.normal(1, 1, (200, 8)), np.repeat(rng.normal(1, 1, (2, 8)), 100, 0) + rng.normal(0, .01, (200, 8))
    t = synthetic_set_checks(good, held, real_benign=benign, real_malignant=malignant, synthetic_prob=rng.uniform(.3, 1, 200),
                             threshold=.2, heldout_prob=rng.uniform(.3, 1, 60), generator='good')
    assert t.columns.tolist() == CHECK_COLUMNS and t.passed.all()
    assert t.check.tolist() == ['kid_vs_heldout_malignant', 'probe_called_malignant', 'classifier_called_malignant_at_threshold',
                                'classifier_called_malignant_at_0.5', 'diversity_ratio']
    bad = synthetic_set_checks(collapsed, held, synthetic_prob=np.full(200, .4), threshold=.5).set_index('check').passed
    assert not bad['diversity_ratio'] and not bad['kid_vs_heldout_malignant'] and not bad['classifier_called_malignant_at_0.5']
    assert mean_pairwise_distance([[0, 0], [0, 1], [0, 2]]) == pytest.approx(4 / 3)
    assert kid_yardstick(held)['n_per_half'] == 30


def test_synthetic_set_checks_with_a_classifier(monkeypatch, tmp_path):
    "The baseline passed as `classifier` gives the shares from image files (its p(malignant) column by vocab)."
    import types, melanet_nb.classifier as clf
    from melanet_nb.evaluation import MetricInputError
    rng = np.random.default_rng(1)
    files = [str(tmp_path/f'{i}.png') for i in range(6)]
    probs = {f: p for f, p in zip(files, [.9, .8, .1, .7, .6, .2])}
    monkeypatch.setattr(clf, 'predict_proba', lambda learn, paths: np.array([[1 - probs[p], probs[p]] for p in paths]))
    monkeypatch.setattr('melanet_nb.evaluation._as_features', lambda x, size: rng.normal(size=(len(x), 4)))
    learn = types.SimpleNamespace(dls=types.SimpleNamespace(vocab=['benign', 'malignant']))
    t = synthetic_set_checks(files[:4], files[:6], classifier=learn, threshold=.75).set_index('check')
    assert t.loc['classifier_called_malignant_at_threshold', 'value'] == pytest.approx(.5)      # .9, .8 of .9 .8 .1 .7
    assert t.loc['classifier_called_malignant_at_0.5', 'value'] == pytest.approx(.75)
    assert t.loc['classifier_called_malignant_at_0.5', 'reference'] == pytest.approx(4 / 6)
    with pytest.raises(MetricInputError, match='needs image files'):
        synthetic_set_checks(rng.normal(size=(4, 3)), rng.normal(size=(6, 3)), classifier=learn)
