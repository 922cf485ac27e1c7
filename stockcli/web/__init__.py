"""The read-only dashboard (`stockcli serve`) and the HTML report's templates and charts."""
