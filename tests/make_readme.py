"Write README.md from nbs/index.ipynb (nbdev_readme needs quarto, which this project does not require)."
import sys, nbformat
from pathlib import Path

def render(nb_path):
    out = []
    for c in nbformat.read(nb_path, as_version=4).cells:
        src = c.source.strip()
        if c.cell_type == 'markdown': out.append(src); continue
        if '#| hide' in src or 'parameters' in c.metadata.get('tags', []): continue
        out.append('```python\n' + src + '\n```')
        for o in c.get('outputs', []):
            text = o.get('text') or o.get('data', {}).get('text/markdown') or o.get('data', {}).get('text/plain')
            if text: out.append('```\n' + ''.join(text).strip() + '\n```')
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parents[1]
    (root/'README.md').write_text(render(root/'nbs'/'index.ipynb'))
