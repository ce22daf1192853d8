"Real-data checks on ../shared/data; they skip cleanly when it is missing."
import time, numpy as np, pytest
from PIL import Image
from conftest import SHARED_DATA
from melanet_nb.data import (read_dataset, merge_datasets, exclude_seen, add_valid_split, prepare_image, prepare_mask,
                             load_mask, mask_summary, has_mask, melanet_dls, DIAGNOSES)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_DATA.is_dir(), reason='../shared/data is missing')]

def test_isic2016_counts():
    df = read_dataset(SHARED_DATA/'isic2016')
    assert len(df) == 766
    assert df.label.value_counts().to_dict() == {'benign': 618, 'malignant': 148}
    split = add_valid_split(df, seed=42)
    assert split.split.value_counts().to_dict() == {'train': 612, 'valid': 154}
    assert prepare_image(df.path[0], 64).size == (64, 64)

def test_isic2017_dedup_against_isic2016():
    isic16, isic17 = read_dataset(SHARED_DATA/'isic2016'), read_dataset(SHARED_DATA/'isic2017_256')
    assert (isic17.split == 'train').sum() == 1695 and (isic17.split == 'test').sum() == 150
    merged, dropped = merge_datasets(isic16, isic17, splits=('train',))
    assert dropped == 746                                   # SOURCE.md: 746 2017-train images are 2016-train images
    assert merged.image_id.is_unique and len(merged) == 766 + 1695 - 746
    test, seen = exclude_seen(isic17[isic17.split == 'test'], isic16)
    assert seen == 3 and len(test) == 147                   # 3 2016-train images sit in 2017 validation
    assert not test.image_id.isin(merged[merged.split == 'train'].image_id).any()
    assert mask_summary(merged)['n_missing'] == 17          # recounted from the column after the concat

def test_isic2017_diagnoses_and_masks():
    t0 = time.time()
    df = read_dataset(SHARED_DATA/'isic2017_256')           # reads diagnosis.csv, attaches and checks 1845 masks
    assert time.time() - t0 < 15
    assert len(df) == 1845
    counts = df.groupby(['split', 'diagnosis']).size().unstack()[DIAGNOSES]
    assert counts.loc['train'].tolist() == [1130, 311, 254] and counts.loc['test'].tolist() == [78, 30, 42]
    assert ((df.diagnosis == 'melanoma') == (df.label == 'malignant')).all()
    assert mask_summary(df) == dict(n=1845, n_with_mask=1845, n_missing=0, missing_examples=[])
    split = add_valid_split(df, seed=42)                    # stratified by diagnosis: every class is validated on
    assert set(split[split.split == 'valid'].diagnosis) == set(DIAGNOSES)

def test_isic2016_masks_missing_counted():
    t0 = time.time()
    with pytest.warns(UserWarning, match=r'masks: 17 of 766 image\(s\) have no mask') as record:
        df = read_dataset(SHARED_DATA/'isic2016')
    assert time.time() - t0 < 15
    assert 'ISIC_0000058' in str(record[0].message)
    assert len(df) == 766 and 'diagnosis' not in df         # binary data stays binary
    summary = mask_summary(df)
    assert (summary['n_with_mask'], summary['n_missing'], df.attrs['n_missing_masks']) == (749, 17, 17)
    assert summary['missing_examples'][0] == 'ISIC_0000058'

def test_prepare_mask_real_binary_and_aligned():
    df = read_dataset(SHARED_DATA/'isic2016', validate_masks=False)
    wide = [r for r in df[has_mask(df)].itertuples() if Image.open(r.path).size[0] != Image.open(r.path).size[1]][:40]
    assert len(wide) == 40                                  # the 512-px originals are not square: padding matters
    darker = []
    for r in wide:
        mask = np.asarray(prepare_mask(r.mask, 128))
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
        geometry = np.asarray(prepare_image(load_mask(r.mask).convert('RGB'), 128))[..., 0] > 127   # the image path
        assert (geometry == (mask > 0)).mean() > .99
        gray = np.asarray(prepare_image(r.path, 128), np.float32).mean(-1)
        content = np.asarray(prepare_mask(Image.new('L', Image.open(r.path).size, 255), 128)) > 0
        darker.append(gray[mask > 0].mean() < gray[content & (mask == 0)].mean())
    assert np.mean(darker) > .8                             # the lesion is where the mask says (SOURCE.md: 97% darker)

def test_dls_with_masks_real():
    df = add_valid_split(read_dataset(SHARED_DATA/'isic2017_256'), seed=42)
    dls = melanet_dls(df, size=64, bs=8, target='diagnosis', with_mask=True)
    image, mask, y = dls.one_batch()
    assert image.shape == (8, 3, 64, 64) and mask.shape == (8, 64, 64) and dls.vocab == DIAGNOSES
    assert set(mask.unique().tolist()) == {0, 1}
