"Real-data checks on ../shared/data; they skip cleanly when it is missing."
import pytest
from conftest import SHARED_DATA
from melanet_nb.data import read_dataset, merge_datasets, exclude_seen, add_valid_split, prepare_image

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
