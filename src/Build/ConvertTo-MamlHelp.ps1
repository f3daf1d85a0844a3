param($MarkdownPath,$OutputFile) Set-Content $OutputFile "<helpItems/>"
