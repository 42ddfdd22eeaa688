"""Operations tooling: the local stack launcher and the local Airflow."""
