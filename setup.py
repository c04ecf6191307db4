from setuptools import find_packages, setup


def version():
    ns = {}
    with open('mmcondattn/version.py') as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='mmcondattn',
    version=version(),
    description='Conditioned attention (preconditioning, spectral Q/K/V, conditioned tokens) '
    'for MMDetection and MMPretrain backbones',
    packages=find_packages(include=['mmcondattn', 'mmcondattn.*']),
    python_requires='>=3.9',
    # The OpenMMLab stack is installed by tools/setup_env.sh (mmcv must be built against the
    # installed torch); see docs/installation.md for existing and GPU environments.
    install_requires=['numpy'],
    # the plots of tools/analysis_tools/ (mmcondattn.analysis)
    extras_require={'analysis': ['matplotlib']},
    license='Apache-2.0',
)
