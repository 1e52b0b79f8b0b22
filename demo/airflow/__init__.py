"""Apache Airflow 3 in the demo (``demo.airflow: true``): the event-creation pipeline's DAG
(``dags/event_creation.py``), what runs it (``launcher``) and a client of its API (``client``).
Airflow lives in its own venv,
``.venv-airflow`` (``make airflow-venv``, pins in ``requirements.txt``), never in ``.venv``:
docs/automation.md "Airflow"."""
