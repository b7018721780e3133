"""What every edge shares: who the caller is (identity.py) and how a domain error is answered
(errors.py), each decided in one place for HTTP and gRPC alike."""
