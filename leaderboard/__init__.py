"""Results to tables: markdown, CSV and HTML, with the paper's numbers beside ours."""
