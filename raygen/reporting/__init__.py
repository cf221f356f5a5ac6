"""Reports built from the pipeline's metrics: the paper's tables with our numbers beside them."""
