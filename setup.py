import os.path as osp
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def version():
    ns = {}
    with open(osp.join(HERE, 'mmcondattn/version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def requirements(name):
    """The requirement lines of requirements/<name>.txt (no comments, no ``-r``)."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


setup(
    name='mmcondattn',
    version=version(),
    description='Conditioned attention (preconditioning, spectral Q/K/V, conditioned tokens) '
    'for MMDetection, MMPretrain and timm backbones',
    packages=find_packages(include=['mmcondattn', 'mmcondattn.*']),
    python_requires='>=3.9',
    # The core needs torch alone (installed by the user for their CUDA, as for OpenMMLab
    # packages). The OpenMMLab stack ('mim') is installed by tools/setup_env.sh, which builds
    # mmcv against the installed torch; see docs/installation.md.
    install_requires=requirements('runtime'),
    extras_require={
        'mim':
        requirements('mminstall'),
        'optional':
        requirements('optional'),
        'tests':
        requirements('tests'),
        'all':
        sorted(set(requirements('mminstall') + requirements('optional') + requirements('tests'))),
    },
    license='Apache-2.0',
)
