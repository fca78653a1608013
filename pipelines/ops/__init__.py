"""Operations on top of the source and the reporting: the runner with its locks and checkpoints, newest-wins cleanup after a load, status and doctor."""
