import cProfile, pstats, sys, time
from pathlib import Path
t=time.time()
from rescuemeta.report import analyze
R=Path('/work/main')
out=Path(sys.argv[1])
cProfile.run("analyze(Path('spec.toml'), R/'data/studies.csv', R/'data/abstract_estimates.csv', out/'report', cache_dir=out/'cache')", str(out)+'.prof')
print('total', time.time()-t)
