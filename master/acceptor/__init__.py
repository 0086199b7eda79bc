"""One port per host: the master accepts every connection and hands it to a worker."""
