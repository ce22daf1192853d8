"Reliability (issue 14, issue 13 parts 4-5): bad inputs get a message naming the file, stale state never survives."
import os, signal, subprocess, sys, time, warnings
import numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from PIL import Image
from fastai.basics import Callback, CancelFitException
from melanet_nb.data import *
from melanet_nb.cyclegan import *

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent/'shared'/'data'


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "A 20-image demo dataset (3 diagnoses, masks), written once for this module."
    return make_demo_dataset(tmp_path_factory.mktemp('demo')/'demo', n=20, size=48, seed=3, progress=False)


def _copy(src, dst):
    import shutil; shutil.copytree(src, dst); return dst


# (1) the data fingerprint follows what the data stage reads
def test_fingerprint_changes_with_labels_images_and_masks(demo, tmp_path):
    d = _copy(demo, tmp_path/'d')
    base = dataset_fingerprint(d)
    lab = pd.read_csv(d/'labels.csv', dtype=str)
    lab.assign(label=lab.label.where(lab.index != 0, 'malignant' if lab.label[0] == 'benign' else 'benign')).to_csv(d/'labels.csv', index=False)
    flipped = dataset_fingerprint(d)
    lab.to_csv(d/'labels.csv', index=False)
    assert dataset_fingerprint(d) == base                  # same content, same key (tables are hashed by content)
    lab.iloc[1:].to_csv(d/'labels.csv', index=False)       # a row deleted
    dropped = dataset_fingerprint(d)
    lab.to_csv(d/'labels.csv', index=False)
    dx = pd.read_csv(d/'diagnosis.csv', dtype=str)
    dx.assign(split='test').to_csv(d/'diagnosis.csv', index=False)   # splits in diagnosis.csv
    diag = dataset_fingerprint(d)
    dx.to_csv(d/'diagnosis.csv', index=False)
    img = sorted((d/'images').iterdir())[2]
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))   # same bytes, newer mtime
    touched = dataset_fingerprint(d)
    mask = sorted((d/'masks').iterdir())[3]; mask.write_bytes(mask.read_bytes() + b'\0')   # a mask's size changes
    masked = dataset_fingerprint(d)
    assert len({base, flipped, dropped, diag, touched, masked}) == 6
    (d/f'.labels.csv.tmp{os.getpid()}').write_text('half')   # hidden temporary files are not data
    assert dataset_fingerprint(d) == masked


def test_fingerprint_of_other_layouts_and_errors(demo, tmp_path):
    npz = tmp_path/'derma.npz'
    np.savez(npz, train_images=np.zeros((2, 8, 8, 3), np.uint8), train_labels=np.array([[0], [4]]))
    a = dataset_fingerprint(npz)
    np.savez(npz, train_images=np.zeros((2, 8, 8, 3), np.uint8), train_labels=np.array([[0], [4], [5]])[:2] + 1)
    assert dataset_fingerprint(npz) != a
    with pytest.raises(DataError, match='nowhere: dataset not found'): dataset_fingerprint(tmp_path/'nowhere')


@pytest.mark.skipif(not (SHARED_DATA/'isic2017_256').is_dir(), reason='real data not present')
def test_fingerprint_is_cheap_on_thousands_of_files():
    t0 = time.perf_counter()
    dataset_fingerprint(SHARED_DATA/'isic2017_256')   # ~3700 files
    assert time.perf_counter() - t0 < 5


# (5) every bad image and mask at once, before anything trains
def test_verify_images_lists_every_bad_file(demo, tmp_path):
    d = _copy(demo, tmp_path/'d')
    df = read_dataset(d, validate_masks=False)
    assert verify_images(df, progress=False) is df
    bad_img, text_img, bad_mask, grey_mask = Path(df.path[0]), Path(df.path[4]), Path(df['mask'][6]), Path(df['mask'][8])
    bad_img.write_bytes(bad_img.read_bytes()[:400])
    text_img.write_text('this is not a JPEG')
    bad_mask.write_bytes(b'\x89PNG\r\n garbage')
    Image.fromarray(np.full(Image.open(df.path[8]).size[::-1], 128, np.uint8)).save(grey_mask)
    with pytest.raises(DataError) as e: verify_images(df, progress=False)
    msg = str(e.value)
    assert '4 of 20 image(s)/mask(s) are bad' in msg
    for f in (bad_img, text_img, bad_mask, grey_mask): assert str(f) in msg
    assert 'not binary' in msg and 'cannot decode image' in msg and 'cannot decode mask' in msg


def test_verify_images_catches_a_truncated_large_jpeg(tmp_path):
    "Reduced-scale decoding still reads the whole file."
    p = tmp_path/'big.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), np.uint8)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:-20000])
    df = pd.DataFrame(dict(image_id=['big'], path=[str(p)], label=['benign'], split=['train']))
    with pytest.raises(DataError, match='big.jpg: cannot decode image'): verify_images(df, progress=False)


# (6) transparency is composited on white
def test_rgba_with_transparency_is_composited_on_white(tmp_path):
    Image.new('RGBA', (8, 6), (200, 40, 40, 0)).save(tmp_path/'clear.png')
    Image.new('RGBA', (8, 6), (0, 0, 0, 128)).save(tmp_path/'half.png')
    Image.new('RGBA', (8, 6), (10, 20, 30, 255)).save(tmp_path/'opaque.png')
    Image.new('LA', (8, 6), (0, 0)).save(tmp_path/'la.png')
    assert load_image(tmp_path/'clear.png').getpixel((0, 0)) == (255, 255, 255)
    assert load_image(tmp_path/'half.png').getpixel((0, 0)) == (127, 127, 127)
    assert load_image(tmp_path/'opaque.png').getpixel((0, 0)) == (10, 20, 30)
    assert load_image(tmp_path/'la.png').getpixel((0, 0)) == (255, 255, 255)
    assert prepare_image(tmp_path/'clear.png', 8).getpixel((4, 4)) == (255, 255, 255)


# (7) a one-class test split is refused at the data stage
def test_one_class_test_split_is_refused(demo, tmp_path):
    d = _copy(demo, tmp_path/'d')
    lab = pd.read_csv(d/'labels.csv', dtype=str)
    df = read_dataset(d)
    test = df[df.split == 'test']
    one = pd.concat([df[df.split != 'test'], test[test.label == 'benign']])
    with pytest.raises(DataError, match=r"split 'test' has only class \['benign'\]"): check_classes(one, d)
    with pytest.raises(DataError, match=r"split 'valid' has only class"):
        check_classes(add_valid_split(df).pipe(lambda t: t[(t.split != 'valid') | (t.label == 'malignant')]), d)
    assert len(check_classes(add_valid_split(df), d)) == len(df)


# (10) empty and garbled tables name the file
@pytest.mark.parametrize('content,msg', [(b'', 'the file is empty'), (b'   \n', 'the file is empty'),
                                         (b'image_id,label,split\n', 'has a header but no rows'),
                                         (b'\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff\xfe\xfd', 'not a text CSV file'),
                                         (b'image_id,label,split\n"x,benign,train\n', 'cannot parse as CSV'),
                                         (b'a;b;c\n1;2;3\n', 'missing column(s)')])
def test_empty_or_garbled_labels_csv(demo, tmp_path, content, msg):
    d = _copy(demo, tmp_path/'d')
    (d/'labels.csv').write_bytes(content)
    with pytest.raises(DataError) as e: read_dataset(d)
    assert str(e.value).startswith(f"{d/'labels.csv'}: ") and msg in str(e.value)


def test_empty_diagnosis_csv_and_isic_csv(demo, tmp_path):
    d = _copy(demo, tmp_path/'d')
    (d/'diagnosis.csv').write_bytes(b'')
    with pytest.raises(DataError, match='diagnosis.csv: the file is empty'): read_dataset(d)
    isic = tmp_path/'isic'; (isic/'ISBI2016_ISIC_Part3_Training_Data').mkdir(parents=True)
    (isic/'ISBI2016_ISIC_Part3_Training_GroundTruth.csv').write_bytes(b'')
    with pytest.raises(DataError, match='ISBI2016_ISIC_Part3_Training_GroundTruth.csv: the file is empty'): read_dataset(isic)


# --n-demo -5 and friends: refused before anything is written
@pytest.mark.parametrize('kw,msg', [(dict(n=-5), 'n must be a non-negative integer, got -5'), (dict(n=0), 'n=0 is too small'),
                                    (dict(n=5), 'n=5 is too small'), (dict(n=40, size=4), 'size must be an integer >= 8'),
                                    (dict(n='40'), "got '40'"), (dict(n=40, seed=-1), 'seed must be a non-negative integer')])
def test_demo_parameters_checked_before_writing(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg): demo_data(root=tmp_path/'cache', **kw)
    assert not (tmp_path/'cache').exists()


# (13) stale temporary files from killed writes, and folder permissions
def _killed_writer(target) -> int:
    "Start a process that begins an atomic write of `target`, kill it mid-write, return its pid."
    code = ("import sys, time; from pathlib import Path; from melanet_nb.data import atomic_write\n"
            "def w(t): Path(t).write_bytes(b''); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write({str(target)!r}, w)")
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'writing'
    os.kill(p.pid, signal.SIGKILL); p.wait()
    return p.pid


def test_killed_write_leaves_a_temp_that_the_next_start_removes(tmp_path):
    ckpt_dir = tmp_path/'ck'
    pid = _killed_writer(ckpt_dir/'cyclegan_epoch0004.pth')
    stale = ckpt_dir/f'.cyclegan_epoch0004.pth.tmp{pid}'
    assert stale.exists() and stale.stat().st_size == 0
    df = _domains(tmp_path)
    train_cyclegan(df[df.label == 'benign'], df[df.label == 'malignant'], ckpt_dir=ckpt_dir, **{**KW, 'epochs': 1})
    assert not stale.exists()
    assert [p.name for p in ckpt_dir.iterdir()] == ['cyclegan_epoch0001.pth']
    pid = _killed_writer(tmp_path/'run'/'data'/'table.csv')
    assert [p.name for p in remove_stale_tmp(tmp_path/'run')] == [f'.table.csv.tmp{pid}']


def test_atomic_dir_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path/'set') as d: (d/'x').write_text('1')
        assert (tmp_path/'set').stat().st_mode & 0o777 == 0o755
    finally: os.umask(old)


# (3) + (12) CycleGAN resume: exact history after two interruptions, other settings refused
def _domains(tmp_path, n=3, size=32):
    rng, rows = np.random.default_rng(0), []
    for label, base in (('benign', 80), ('malignant', 170)):
        for i in range(n):
            p = tmp_path/f'{label}{i}.png'
            Image.fromarray((base + rng.integers(-40, 40, (size, size + 8, 3))).clip(0, 255).astype(np.uint8)).save(p)
            rows.append(dict(image_id=f'{label}{i}', path=str(p), label=label, split='train', source='toy'))
    return pd.DataFrame(rows)


class StopAfter(Callback):
    order = 99
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch + 1 >= self.n: raise CancelFitException()


KW = dict(size=32, epochs=3, width=4, disc_width=4, ckpt_every=1, pool_size=2)


def _losses_csv(learn):
    "What the pipeline writes as losses.csv."
    values, names = [list(v) for v in learn.recorder.values], list(learn.recorder.metric_names[1:-1])
    return pd.DataFrame(values, columns=names if values and len(names) == len(values[0]) else None)


def test_two_interruptions_keep_the_exact_loss_history(tmp_path):
    df = _domains(tmp_path)
    b, m = df[df.label == 'benign'], df[df.label == 'malignant']
    whole = train_cyclegan(b, m, ckpt_dir=tmp_path/'a', **KW)
    train_cyclegan(b, m, ckpt_dir=tmp_path/'b', cbs=StopAfter(1), **KW)
    second = train_cyclegan(b, m, ckpt_dir=tmp_path/'b', cbs=StopAfter(2), **KW)
    assert second.recorder.values == whole.recorder.values[:2]
    assert read_checkpoint(checkpoint_path(tmp_path/'b', 2))['recorder'] == whole.recorder.values[:2]
    resumed = train_cyclegan(b, m, ckpt_dir=tmp_path/'b', **KW)
    assert resumed.recorder.values == whole.recorder.values
    assert read_checkpoint(checkpoint_path(tmp_path/'b', 3))['recorder'] == whole.recorder.values
    pd.testing.assert_frame_equal(_losses_csv(resumed), _losses_csv(whole))
    assert list(_losses_csv(resumed).columns)[:2] == ['train_loss', 'adv_benign_to_malignant']   # the header is kept
    for x, y in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()): assert torch.equal(x, y)


@pytest.mark.parametrize('change', [dict(cycle_weight=5.), dict(adv='log'), dict(seed=7), dict(identity_weight=2.),
                                    dict(lr=1e-3), dict(pool_size=3)])
def test_resume_under_other_settings_is_refused(tmp_path, change):
    df = _domains(tmp_path, n=2)
    b, m = df[df.label == 'benign'], df[df.label == 'malignant']
    train_cyclegan(b, m, ckpt_dir=tmp_path/'c', **{**KW, 'epochs': 1})
    with pytest.raises(ValueError, match=f"checkpoint was trained with other settings .*'{[*change][0]}'"):
        train_cyclegan(b, m, ckpt_dir=tmp_path/'c', **{**KW, **change})
    with pytest.warns(UserWarning, match='starting afresh'):
        train_cyclegan(b, m, ckpt_dir=tmp_path/'c', resume=False, **{**KW, **change, 'epochs': 1})


# issue 13 (5): export a generator and translate any image
def test_translate_rectangular_images_keep_their_size(tmp_path):
    df = _domains(tmp_path, n=2)
    learn = train_cyclegan(df[df.label == 'benign'], df[df.label == 'malignant'], ckpt_dir=tmp_path/'ck', **{**KW, 'epochs': 1})
    g = export_generator(list_checkpoints(tmp_path/'ck')[-1], tmp_path/'G.pth')
    assert g.stat().st_size < list_checkpoints(tmp_path/'ck')[-1].stat().st_size / 3
    imgs = tmp_path/'mine'; imgs.mkdir()
    Image.new('RGB', (301, 120), (190, 140, 110)).save(imgs/'wide.jpg')
    Image.new('L', (50, 173), 90).save(imgs/'tall_grey.png')
    Image.new('RGBA', (64, 64), (120, 70, 50, 200)).save(imgs/'square.png')
    out = translate_images(g, imgs, tmp_path/'out', progress=False)
    assert [Path(p).name for p in out.path] == ['square.png', 'tall_grey.png', 'wide.png']   # a folder: its images, sorted
    assert [Image.open(p).size for p in out.path] == [(64, 64), (50, 173), (301, 120)]     # each keeps its own size
    m2b = export_generator(learn, tmp_path/'F.pth', direction='malignant_to_benign')
    _, meta = load_generator(m2b)
    assert meta['direction'] == 'malignant_to_benign' and meta['size'] == 32


def test_translate_bad_model_files_are_named(tmp_path):
    for name, content in [('empty.pth', b''), ('text.pth', b'hello'), ('model.pkl', b'\x80\x04K\x01.')]:
        (tmp_path/name).write_bytes(content)
        with pytest.raises(DataError, match=f'{name}: not a generator file'): load_generator(tmp_path/name)


# (14) duplicates under different ids
def test_find_duplicate_images_between_train_and_test(demo, tmp_path):
    d = _copy(demo, tmp_path/'d')
    df = read_dataset(d)
    train, test = df[df.split == 'train'], df[df.split == 'test']
    Path(test.path.iloc[0]).write_bytes(Path(train.path.iloc[0]).read_bytes())   # a test image that is a training image
    pairs = find_duplicate_images(df)
    assert pairs[['query_id', 'reference_id']].values.tolist() == [[test.image_id.iloc[0], train.image_id.iloc[0]]]
    assert find_duplicate_images(df, query=('test',), reference=('test',)).empty   # the same id is not a duplicate


# issue 13 (4): fastai's own predict on an exported classifier
def test_load_learner_predict_path_and_pil(demo, tmp_path):
    import torch.nn as nn
    from fastai.learner import Learner, load_learner
    tbl = add_valid_split(read_dataset(demo), seed=0)
    learn = Learner(melanet_dls(tbl, size=32, bs=4), nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    learn.export(tmp_path/'m.pkl')
    loaded = load_learner(tmp_path/'m.pkl')
    p = tbl.path[0]
    want = loaded.predict(p)[2]
    for item in (Path(p), Image.open(p), Image.open(p).convert('RGBA'), tbl.iloc[0]):
        torch.testing.assert_close(loaded.predict(item)[2], want)
    dl = loaded.dls.test_dl([Path(p), Path(tbl.path[1])])   # get_preds on a list of Paths too
    assert loaded.get_preds(dl=dl)[0].shape == (2, 2)
