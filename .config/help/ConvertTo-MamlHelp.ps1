#Requires -Version 7.4
<#
.SYNOPSIS
    Turns cmdlet help written in PlatyPS's markdown schema (2.0.0) into one MAML file for Get-Help.
.DESCRIPTION
    How the module's help is built (build.ps1 -Task Help, and Package). Reads every *.md file of -MarkdownPath
    (one file per cmdlet: YAML front matter, "# Name", then SYNOPSIS, SYNTAX, DESCRIPTION, EXAMPLES,
    PARAMETERS, INPUTS, OUTPUTS, NOTES, RELATED LINKS) and writes the helpItems document that PlatyPS's
    New-ExternalHelp would write: command:details, maml:description, command:syntax (one syntaxItem per
    parameter set, taken from the "Parameter Sets" lines of the parameters' yaml blocks),
    command:parameters, command:inputTypes, command:returnValues, maml:alertSet, command:examples and
    command:relatedLinks.

    The converter is strict on purpose: help that would show up empty in Get-Help stops the build.
    It throws, naming the file and the section, when SYNOPSIS, DESCRIPTION or EXAMPLES is missing or
    empty, when an example has no code, when a parameter has no description or no yaml block, or when
    a PlatyPS placeholder ("{{ Fill ... }}") is left in.
.EXAMPLE
    ./.config/help/ConvertTo-MamlHelp.ps1 -MarkdownPath ./en-US -OutputFile ./out/KvmStorage/0.1.0/en-US/KvmStorage.dll-Help.xml
#>
[CmdletBinding()]
param(
    # The folder of the cmdlets' markdown files (about_*.help.txt files there are ignored).
    [Parameter(Mandatory)] [string] $MarkdownPath,

    # The MAML file to write, such as out/KvmStorage/0.1.0/en-US/KvmStorage.dll-Help.xml.
    [Parameter(Mandatory)] [string] $OutputFile
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$NsMaml = 'http://schemas.microsoft.com/maml/2004/10'
$NsCommand = 'http://schemas.microsoft.com/maml/dev/command/2004/10'
$NsDev = 'http://schemas.microsoft.com/maml/dev/2004/10'
$NsMsHelp = 'http://msdn.microsoft.com/mshelp'

$YamlKeys = 'Type', 'Parameter Sets', 'Aliases', 'Accepted values', 'Required', 'Position', 'Default value', 'Accept pipeline input', 'Accept wildcard characters'

function Stop-Conversion([string] $File, [string] $Section, [string] $Problem) {
    throw "ConvertTo-MamlHelp: ${File}: section '$Section': $Problem"
}

function Test-Placeholder([string] $Text) { $Text -match '\{\{.*\}\}' }

# Splits the lines of a section into blocks: @{ Kind = 'text'|'code'; Info = <fence info>; Lines = ... }.
function Split-Fences([string[]] $Lines) {
    $blocks = [System.Collections.Generic.List[object]]::new()
    $current = $null
    $fence = $null
    foreach ($line in $Lines) {
        if ($null -eq $fence -and $line -match '^\s*(```+|~~~+)\s*([\w+-]*)\s*$') {
            $fence = $Matches[1]
            $current = [pscustomobject]@{ Kind = 'code'; Info = $Matches[2]; Lines = [System.Collections.Generic.List[string]]::new() }
            $blocks.Add($current)
            continue
        }
        if ($null -ne $fence) {
            if ($line.Trim() -eq $fence) { $fence = $null; $current = $null; continue }
            $current.Lines.Add($line)
            continue
        }
        if ($null -eq $current -or $current.Kind -ne 'text') {
            $current = [pscustomobject]@{ Kind = 'text'; Info = ''; Lines = [System.Collections.Generic.List[string]]::new() }
            $blocks.Add($current)
        }
        $current.Lines.Add($line)
    }
    if ($null -ne $fence) { throw "unterminated code fence ($fence)" }
    , $blocks
}

# Markdown prose to MAML paragraphs: blank lines separate paragraphs; soft line breaks become spaces,
# except in lists and indented text, whose lines are kept.
function ConvertTo-Paragraphs([string[]] $Lines) {
    $paras = [System.Collections.Generic.List[string]]::new()
    $buffer = [System.Collections.Generic.List[string]]::new()
    $flush = {
        if ($buffer.Count -gt 0) {
            $keepLines = @($buffer | Where-Object { $_ -match '^\s*([-*+]|\d+\.)\s' }).Count -gt 0
            if ($keepLines) {
                # One line per list item: continuation lines join their item, so Get-Help can wrap it.
                $items = [System.Collections.Generic.List[string]]::new()
                foreach ($l in $buffer) {
                    if ($items.Count -eq 0 -or $l -match '^\s*([-*+]|\d+\.)\s') { $items.Add($l.TrimEnd()) }
                    else { $items[$items.Count - 1] += ' ' + $l.Trim() }
                }
                $text = $items -join "`n"
            }
            else { $text = ($buffer | ForEach-Object Trim) -join ' ' }
            $paras.Add($text)
            $buffer.Clear()
        }
    }
    foreach ($line in $Lines) {
        if ($line.Trim().Length -eq 0) { & $flush } else { $buffer.Add($line) }
    }
    & $flush
    , $paras
}

# Section text (prose and any code blocks, kept verbatim) as paragraphs.
function ConvertTo-SectionParagraphs([string[]] $Lines) {
    $paras = [System.Collections.Generic.List[string]]::new()
    foreach ($block in (Split-Fences $Lines)) {
        if ($block.Kind -eq 'code') { $paras.Add(($block.Lines -join "`n")) }
        else { foreach ($p in (ConvertTo-Paragraphs $block.Lines)) { $paras.Add($p) } }
    }
    , $paras
}

# Splits lines on headings of the given level ('## ', '### '), ignoring headings inside code fences.
function Split-Headings([string[]] $Lines, [string] $Marker) {
    $parts = [System.Collections.Generic.List[object]]::new()
    $current = [pscustomobject]@{ Title = $null; Lines = [System.Collections.Generic.List[string]]::new() }
    $parts.Add($current)
    $inFence = $false
    foreach ($line in $Lines) {
        if ($line -match '^\s*(```|~~~)') { $inFence = -not $inFence }
        if (-not $inFence -and $line.StartsWith($Marker)) {
            $current = [pscustomobject]@{ Title = $line.Substring($Marker.Length).Trim(); Lines = [System.Collections.Generic.List[string]]::new() }
            $parts.Add($current)
            continue
        }
        $current.Lines.Add($line)
    }
    , $parts
}

function Read-YamlBlock([string[]] $Lines, [string] $File, [string] $Section) {
    $values = [ordered]@{}
    foreach ($line in $Lines) {
        if ($line.Trim().Length -eq 0) { continue }
        if ($line -notmatch '^([A-Za-z ]+):\s*(.*)$') { Stop-Conversion $File $Section "unreadable yaml line '$line'." }
        $key = $Matches[1].Trim()
        if ($key -notin $YamlKeys) { Stop-Conversion $File $Section "unknown yaml key '$key' (expected: $($YamlKeys -join ', '))." }
        $values[$key] = $Matches[2].Trim()
    }
    foreach ($key in 'Type', 'Parameter Sets', 'Required', 'Position') {
        if (-not $values.Contains($key) -or -not $values[$key]) { Stop-Conversion $File $Section "the yaml block has no '$key'." }
    }
    $sets = @($values['Parameter Sets'] -split ',' | ForEach-Object Trim | Where-Object { $_ })
    $aliases = @(if ($values.Contains('Aliases')) { $values['Aliases'] -split ',' | ForEach-Object Trim | Where-Object { $_ } })
    $accepted = @(if ($values.Contains('Accepted values')) { $values['Accepted values'] -split ',' | ForEach-Object Trim | Where-Object { $_ } })
    $position = $values['Position']
    [pscustomobject]@{
        Type          = $values['Type']
        Sets          = $sets
        Aliases       = $aliases
        Accepted      = $accepted
        Required      = $values['Required'] -eq 'True'
        Position      = if ($position -match '^\d+$') { $position } else { 'named' }
        Default       = if ($values.Contains('Default value') -and $values['Default value']) { $values['Default value'] } else { 'None' }
        Pipeline      = if ($values.Contains('Accept pipeline input') -and $values['Accept pipeline input']) { $values['Accept pipeline input'] } else { 'False' }
        Globbing      = $values.Contains('Accept wildcard characters') -and $values['Accept wildcard characters'] -eq 'True'
    }
}

function Read-HelpMarkdown([string] $Path) {
    $file = Split-Path -Leaf $Path
    $lines = [string[]]((Get-Content -LiteralPath $Path -Raw) -replace "`r`n", "`n" -split "`n")
    $i = 0
    if ($lines.Count -gt 0 -and $lines[0].Trim() -eq '---') {
        $end = -1
        for ($j = 1; $j -lt $lines.Count; $j++) { if ($lines[$j].Trim() -eq '---') { $end = $j; break } }
        if ($end -lt 0) { Stop-Conversion $file 'front matter' 'the YAML front matter is not closed with ---.' }
        $schema = $lines[1..([Math]::Max(1, $end - 1))] | Where-Object { $_ -match '^schema:\s*(\S+)' } | ForEach-Object { $Matches[1] }
        if ($schema -and $schema -ne '2.0.0') { Stop-Conversion $file 'front matter' "schema '$schema' is not supported (2.0.0 is)." }
        $i = $end + 1
    }
    $body = if ($i -lt $lines.Count) { $lines[$i..($lines.Count - 1)] } else { @() }

    $top = Split-Headings $body '## '
    $titleLine = $top[0].Lines | Where-Object { $_ -match '^#\s+\S' } | Select-Object -First 1
    if (-not $titleLine) { Stop-Conversion $file 'title' "no '# Name' heading." }
    $name = ($titleLine -replace '^#\s+', '').Trim()
    if ($name -notmatch '^[A-Za-z]+-[A-Za-z0-9]+$') { Stop-Conversion $file 'title' "'$name' is not a Verb-Noun cmdlet name." }

    $sections = @{}
    foreach ($part in $top | Select-Object -Skip 1) {
        $key = $part.Title.ToUpperInvariant()
        if ($sections.ContainsKey($key)) { Stop-Conversion $file $part.Title 'the section appears twice.' }
        $sections[$key] = [string[]]$part.Lines
    }

    $text = {
        param([string] $Section, [bool] $Required)
        if (-not $sections.ContainsKey($Section)) {
            if ($Required) { Stop-Conversion $file $Section 'the section is missing.' }
            return , [System.Collections.Generic.List[string]]::new()
        }
        $paras = ConvertTo-SectionParagraphs $sections[$Section]
        if ($Required -and $paras.Count -eq 0) { Stop-Conversion $file $Section 'the section is empty.' }
        foreach ($p in $paras) { if (Test-Placeholder $p) { Stop-Conversion $file $Section "a PlatyPS placeholder is left in: '$p'." } }
        , $paras
    }

    $synopsis = & $text 'SYNOPSIS' $true
    $description = & $text 'DESCRIPTION' $true
    $notes = & $text 'NOTES' $false

    # SYNTAX: the order of the parameter sets and which one is the default.
    $setOrder = [System.Collections.Generic.List[string]]::new()
    if ($sections.ContainsKey('SYNTAX')) {
        foreach ($part in (Split-Headings $sections['SYNTAX'] '### ') | Where-Object Title) {
            $setOrder.Add(($part.Title -replace '\s*\(Default\)\s*$', '').Trim())
        }
    }

    # EXAMPLES
    if (-not $sections.ContainsKey('EXAMPLES')) { Stop-Conversion $file 'EXAMPLES' 'the section is missing.' }
    $examples = [System.Collections.Generic.List[object]]::new()
    foreach ($part in (Split-Headings $sections['EXAMPLES'] '### ') | Where-Object Title) {
        $where = "EXAMPLES / $($part.Title)"
        try { $blocks = Split-Fences $part.Lines } catch { Stop-Conversion $file $where $_.Exception.Message }
        $code = @($blocks | Where-Object Kind -EQ 'code' | ForEach-Object { ($_.Lines -join "`n").TrimEnd() })
        if ($code.Count -eq 0 -or -not ($code -join '').Trim()) { Stop-Conversion $file $where 'the example has no code block.' }
        $remarks = [System.Collections.Generic.List[string]]::new()
        foreach ($block in $blocks | Where-Object Kind -EQ 'text') { foreach ($p in (ConvertTo-Paragraphs $block.Lines)) { $remarks.Add($p) } }
        foreach ($p in @($code) + @($remarks) + @($part.Title)) { if (Test-Placeholder $p) { Stop-Conversion $file $where "a PlatyPS placeholder is left in: '$p'." } }
        $examples.Add([pscustomobject]@{ Title = $part.Title; Code = $code -join "`n`n"; Remarks = $remarks })
    }
    if ($examples.Count -eq 0) { Stop-Conversion $file 'EXAMPLES' "no '### Example N: title' entries." }

    # PARAMETERS
    $parameters = [System.Collections.Generic.List[object]]::new()
    if ($sections.ContainsKey('PARAMETERS')) {
        foreach ($part in (Split-Headings $sections['PARAMETERS'] '### ') | Where-Object Title) {
            if ($part.Title -eq 'CommonParameters') { continue }
            $where = "PARAMETERS / $($part.Title)"
            if ($part.Title -notmatch '^-(\w+)$') { Stop-Conversion $file $where "expected '### -ParameterName'." }
            $paramName = $Matches[1]
            try { $blocks = Split-Fences $part.Lines } catch { Stop-Conversion $file $where $_.Exception.Message }
            $yaml = @($blocks | Where-Object { $_.Kind -eq 'code' -and $_.Info -eq 'yaml' } | ForEach-Object { Read-YamlBlock $_.Lines $file $where })
            if ($yaml.Count -eq 0) { Stop-Conversion $file $where 'the parameter has no ```yaml block.' }
            $paraList = [System.Collections.Generic.List[string]]::new()
            foreach ($block in $blocks) {
                if ($block.Kind -eq 'text') { foreach ($p in (ConvertTo-Paragraphs $block.Lines)) { $paraList.Add($p) } }
                elseif ($block.Info -ne 'yaml') { $paraList.Add(($block.Lines -join "`n")) }
            }
            if ($paraList.Count -eq 0) { Stop-Conversion $file $where 'the parameter has no description.' }
            foreach ($p in $paraList) { if (Test-Placeholder $p) { Stop-Conversion $file $where "a PlatyPS placeholder is left in: '$p'." } }
            $parameters.Add([pscustomobject]@{ Name = $paramName; Description = $paraList; Blocks = $yaml })
        }
    }

    # INPUTS / OUTPUTS: "### Type" then its description.
    $typeEntries = {
        param([string] $Section)
        $entries = [System.Collections.Generic.List[object]]::new()
        if (-not $sections.ContainsKey($Section)) { return , $entries }
        foreach ($part in (Split-Headings $sections[$Section] '### ') | Where-Object Title) {
            $paras = ConvertTo-SectionParagraphs $part.Lines
            foreach ($p in @($paras) + @($part.Title)) { if (Test-Placeholder $p) { Stop-Conversion $file "$Section / $($part.Title)" "a PlatyPS placeholder is left in: '$p'." } }
            $entries.Add([pscustomobject]@{ Type = $part.Title; Description = $paras })
        }
        , $entries
    }
    $inputs = & $typeEntries 'INPUTS'
    $outputs = & $typeEntries 'OUTPUTS'

    # RELATED LINKS: [text](uri) or plain text, one per line.
    $links = [System.Collections.Generic.List[object]]::new()
    $online = ''
    if ($lines[0].Trim() -eq '---') {
        $online = $lines | Select-Object -First $i | Where-Object { $_ -match '^online version:\s*(\S+)' } | ForEach-Object { $Matches[1] } | Select-Object -First 1
    }
    if ($online) { $links.Add([pscustomobject]@{ Text = 'Online Version:'; Uri = $online }) }
    if ($sections.ContainsKey('RELATED LINKS')) {
        foreach ($line in $sections['RELATED LINKS']) {
            $t = $line.Trim() -replace '^[-*]\s+', ''
            if (-not $t) { continue }
            # Links to sibling markdown files name the command; only web addresses are kept as the uri (Get-Help -Online).
            if ($t -match '^\[([^\]]*)\]\(([^)]*)\)$') { $links.Add([pscustomobject]@{ Text = $Matches[1]; Uri = $(if ($Matches[2] -match '^https?://') { $Matches[2] } else { '' }) }) }
            else { $links.Add([pscustomobject]@{ Text = $t; Uri = '' }) }
        }
    }

    [pscustomobject]@{
        File = $file; Name = $name; Synopsis = $synopsis; Description = $description; SetOrder = $setOrder
        Examples = $examples; Parameters = $parameters; Inputs = $inputs; Outputs = $outputs; Notes = $notes; Links = $links
    }
}

function Write-Paras([System.Xml.XmlWriter] $W, [object[]] $Paras) {
    $W.WriteStartElement('maml', 'description', $NsMaml)
    foreach ($p in $Paras) { $W.WriteElementString('maml', 'para', $NsMaml, $p) }
    $W.WriteEndElement()
}

function Write-Parameter([System.Xml.XmlWriter] $W, $Parameter, $Block, [bool] $InSyntax) {
    $isSwitch = $Block.Type -in 'SwitchParameter', 'System.Management.Automation.SwitchParameter'
    $W.WriteStartElement('command', 'parameter', $NsCommand)
    $W.WriteAttributeString('required', $Block.Required.ToString().ToLowerInvariant())
    $W.WriteAttributeString('variableLength', 'true')
    $W.WriteAttributeString('globbing', $Block.Globbing.ToString().ToLowerInvariant())
    $W.WriteAttributeString('pipelineInput', $Block.Pipeline)
    $W.WriteAttributeString('position', $Block.Position)
    $W.WriteAttributeString('aliases', $(if ($Block.Aliases.Count) { $Block.Aliases -join ', ' } else { 'none' }))
    $W.WriteElementString('maml', 'name', $NsMaml, $Parameter.Name)
    Write-Paras $W $Parameter.Description
    if ($Block.Accepted.Count -gt 0) {
        $W.WriteStartElement('command', 'parameterValueGroup', $NsCommand)
        foreach ($value in $Block.Accepted) {
            $W.WriteStartElement('command', 'parameterValue', $NsCommand)
            $W.WriteAttributeString('required', 'false')
            $W.WriteAttributeString('command', 'variableLength', $NsCommand, 'false')
            $W.WriteString($value)
            $W.WriteEndElement()
        }
        $W.WriteEndElement()
    }
    # A switch shows no value in the syntax line, as in PlatyPS's output.
    if (-not ($isSwitch -and $InSyntax)) {
        $W.WriteStartElement('command', 'parameterValue', $NsCommand)
        $W.WriteAttributeString('required', $(if ($isSwitch) { 'false' } else { 'true' }))
        $W.WriteAttributeString('variableLength', 'false')
        $W.WriteString($Block.Type)
        $W.WriteEndElement()
    }
    $W.WriteStartElement('dev', 'type', $NsDev)
    $W.WriteElementString('maml', 'name', $NsMaml, $Block.Type)
    $W.WriteElementString('maml', 'uri', $NsMaml, '')
    $W.WriteEndElement()
    $W.WriteElementString('dev', 'defaultValue', $NsDev, $(if ($isSwitch -and $Block.Default -eq 'None') { 'False' } else { $Block.Default }))
    $W.WriteEndElement()
}

function Write-Command([System.Xml.XmlWriter] $W, $Help) {
    $verb, $noun = $Help.Name -split '-', 2
    $W.WriteStartElement('command', 'command', $NsCommand)
    $W.WriteAttributeString('xmlns', 'maml', $null, $NsMaml)
    $W.WriteAttributeString('xmlns', 'command', $null, $NsCommand)
    $W.WriteAttributeString('xmlns', 'dev', $null, $NsDev)
    $W.WriteAttributeString('xmlns', 'MSHelp', $null, $NsMsHelp)

    $W.WriteStartElement('command', 'details', $NsCommand)
    $W.WriteElementString('command', 'name', $NsCommand, $Help.Name)
    $W.WriteElementString('command', 'verb', $NsCommand, $verb)
    $W.WriteElementString('command', 'noun', $NsCommand, $noun)
    Write-Paras $W $Help.Synopsis
    $W.WriteEndElement()

    Write-Paras $W $Help.Description

    # One syntax item per parameter set; "(All)" parameters belong to every set.
    $sets = [System.Collections.Generic.List[string]]::new()
    foreach ($s in $Help.SetOrder) { if (-not $sets.Contains($s)) { $sets.Add($s) } }
    foreach ($p in $Help.Parameters) { foreach ($b in $p.Blocks) { foreach ($s in $b.Sets) { if ($s -ne '(All)' -and -not $sets.Contains($s)) { $sets.Add($s) } } } }
    if ($sets.Count -eq 0) { $sets.Add('(All)') }
    $W.WriteStartElement('command', 'syntax', $NsCommand)
    foreach ($set in $sets) {
        $members = foreach ($p in $Help.Parameters) {
            $block = $p.Blocks | Where-Object { $set -in $_.Sets } | Select-Object -First 1
            if (-not $block) { $block = $p.Blocks | Where-Object { '(All)' -in $_.Sets } | Select-Object -First 1 }
            if ($block) {
                $order = if ($block.Position -ne 'named') { [int]$block.Position } elseif ($block.Required) { 1000 } else { 2000 }
                [pscustomobject]@{ Parameter = $p; Block = $block; Order = $order }
            }
        }
        $W.WriteStartElement('command', 'syntaxItem', $NsCommand)
        $W.WriteElementString('maml', 'name', $NsMaml, $Help.Name)
        foreach ($m in @($members) | Sort-Object -Stable Order) { Write-Parameter $W $m.Parameter $m.Block $true }
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'parameters', $NsCommand)
    foreach ($p in $Help.Parameters) { Write-Parameter $W $p $p.Blocks[0] $false }
    $W.WriteEndElement()

    foreach ($kind in @(@{ List = 'inputTypes'; Item = 'inputType'; Entries = $Help.Inputs }, @{ List = 'returnValues'; Item = 'returnValue'; Entries = $Help.Outputs })) {
        $W.WriteStartElement('command', $kind.List, $NsCommand)
        foreach ($entry in $kind.Entries) {
            $W.WriteStartElement('command', $kind.Item, $NsCommand)
            $W.WriteStartElement('dev', 'type', $NsDev)
            $W.WriteElementString('maml', 'name', $NsMaml, $entry.Type)
            $W.WriteEndElement()
            Write-Paras $W $entry.Description
            $W.WriteEndElement()
        }
        $W.WriteEndElement()
    }

    $W.WriteStartElement('maml', 'alertSet', $NsMaml)
    $W.WriteStartElement('maml', 'alert', $NsMaml)
    foreach ($p in $Help.Notes) { $W.WriteElementString('maml', 'para', $NsMaml, $p) }
    $W.WriteEndElement()
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'examples', $NsCommand)
    foreach ($example in $Help.Examples) {
        $W.WriteStartElement('command', 'example', $NsCommand)
        $W.WriteElementString('maml', 'title', $NsMaml, "-------------------------- $($example.Title) --------------------------")
        $W.WriteElementString('dev', 'code', $NsDev, $example.Code)
        $W.WriteStartElement('dev', 'remarks', $NsDev)
        foreach ($p in $example.Remarks) { $W.WriteElementString('maml', 'para', $NsMaml, $p) }
        $W.WriteEndElement()
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'relatedLinks', $NsCommand)
    foreach ($link in $Help.Links) {
        $W.WriteStartElement('maml', 'navigationLink', $NsMaml)
        $W.WriteElementString('maml', 'linkText', $NsMaml, $link.Text)
        $W.WriteElementString('maml', 'uri', $NsMaml, $link.Uri)
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteEndElement()
}

if (-not (Test-Path -LiteralPath $MarkdownPath -PathType Container)) { throw "ConvertTo-MamlHelp: the markdown folder '$MarkdownPath' does not exist." }
$files = @(Get-ChildItem -LiteralPath $MarkdownPath -Filter '*.md' -File | Sort-Object Name)
if ($files.Count -eq 0) { throw "ConvertTo-MamlHelp: no markdown files in '$MarkdownPath'." }

$helps = foreach ($f in $files) {
    try { Read-HelpMarkdown $f.FullName }
    catch { if ($_.Exception.Message -like 'ConvertTo-MamlHelp:*') { throw } else { throw "ConvertTo-MamlHelp: $($f.Name): $($_.Exception.Message)" } }
}
$duplicates = @($helps | Group-Object Name | Where-Object Count -GT 1)
if ($duplicates) { throw "ConvertTo-MamlHelp: more than one markdown file documents $($duplicates.Name -join ', ')." }

$settings = [System.Xml.XmlWriterSettings]::new()
$settings.Indent = $true
$settings.Encoding = [System.Text.UTF8Encoding]::new($false)
$settings.NewLineChars = "`n"
$settings.CheckCharacters = $true
$outDir = Split-Path -Parent ([IO.Path]::GetFullPath($OutputFile))
if (-not (Test-Path $outDir)) { New-Item -ItemType Directory -Path $outDir -Force | Out-Null }

# Written to a temporary file first so a failure never leaves half a help file behind.
$temp = "$OutputFile.tmp"
$writer = [System.Xml.XmlWriter]::Create($temp, $settings)
try {
    $writer.WriteStartDocument()
    $writer.WriteStartElement('helpItems', 'http://msh')
    $writer.WriteAttributeString('schema', 'maml')
    foreach ($help in $helps) { Write-Command $writer $help }
    $writer.WriteEndElement()
    $writer.WriteEndDocument()
}
finally {
    $writer.Dispose()
}
Move-Item -LiteralPath $temp -Destination $OutputFile -Force
Write-Verbose "Wrote help for $(@($helps).Count) cmdlets to $OutputFile"
