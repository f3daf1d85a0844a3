#Requires -Version 7.4
<#
.SYNOPSIS
    Creates or refreshes the PlatyPS-schema (2.0.0) markdown help of every cmdlet the built module exports.
.DESCRIPTION
    Imports the built module and, for each exported cmdlet:
      - with no en-US/<Cmdlet>.md yet, writes a first draft: SYNTAX and every parameter's yaml block from
        the cmdlet's metadata, the synopsis and parameter descriptions from the C# XML documentation
        (<summary> of the class and of each parameter property), and PlatyPS placeholders
        ("{{ Fill ... }}") where a human must write; ConvertTo-MamlHelp.ps1 refuses placeholders, so the
        build fails until the draft is finished;
      - with a file already there, rewrites SYNTAX and every parameter's yaml block from the real metadata
        and keeps all human-written text (synopsis, description, examples, parameter descriptions,
        inputs, outputs, notes, links, and any "Default value" a human set). Parameters the cmdlet no
        longer has are dropped with a warning; new ones get their XML documentation as a first draft.
    Run it in a fresh pwsh (build.ps1 -Task HelpMarkdown does): a loaded binary module cannot be unloaded.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task HelpMarkdown
.EXAMPLE
    dotnet pwsh -NoProfile -File .config/help/New-HelpMarkdown.ps1 -ModulePath out/KvmStorage/0.1.0/KvmStorage.psd1 -MarkdownPath en-US -XmlDocumentationPath src/KvmStorage/bin/Release/net8.0/KvmStorage.xml
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    # The built module: its manifest, or the folder holding it.
    [Parameter(Mandatory)] [string] $ModulePath,

    # The folder of the markdown files (en-US).
    [Parameter(Mandatory)] [string] $MarkdownPath,

    # The C# XML documentation of the cmdlet assembly; first drafts of the descriptions come from it.
    [string] $XmlDocumentationPath
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$CommonParametersText = 'This cmdlet supports the common parameters: -Debug, -ErrorAction, -ErrorVariable, -InformationAction, -InformationVariable, -OutVariable, -OutBuffer, -PipelineVariable, -ProgressAction, -Verbose, -WarningAction, and -WarningVariable. For more information, see [about_CommonParameters](http://go.microsoft.com/fwlink/?LinkID=113216).'
$StandardDescriptions = @{
    WhatIf  = 'Shows what would happen if the cmdlet runs. The cmdlet is not run.'
    Confirm = 'Prompts you for confirmation before running the cmdlet.'
}
$LastParameters = 'Confirm', 'WhatIf', 'IncludeTotalCount', 'Skip', 'First'

if (Test-Path -LiteralPath $ModulePath -PathType Container) {
    $ModulePath = @(Get-ChildItem -LiteralPath $ModulePath -Filter '*.psd1' | Select-Object -First 1)[0].FullName
}
$module = Import-Module $ModulePath -PassThru -Force
if (-not (Test-Path -LiteralPath $MarkdownPath)) { New-Item -ItemType Directory -Path $MarkdownPath | Out-Null }

# --- C# XML documentation ------------------------------------------------------------------------------
$docs = @{}
if (-not $XmlDocumentationPath) {
    $candidate = Join-Path $module.ModuleBase ($module.Name + '.xml')
    if (Test-Path $candidate) { $XmlDocumentationPath = $candidate }
}
if ($XmlDocumentationPath) {
    if (-not (Test-Path -LiteralPath $XmlDocumentationPath)) { throw "New-HelpMarkdown: the XML documentation '$XmlDocumentationPath' does not exist (build first)." }
    foreach ($member in ([xml](Get-Content -Raw -LiteralPath $XmlDocumentationPath)).doc.members.member) {
        if (-not $member.PSObject.Properties['summary']) { continue }
        $xmlText = $member.SelectSingleNode('summary').InnerXml
        $xmlText = $xmlText -replace '<see\s+cref="[A-Z]:(?:[^"]*\.)?([^".]+)"\s*/>', '$1' `
            -replace '<see\s+langword="([^"]+)"\s*/>', '$$$1' `
            -replace '<paramref\s+name="([^"]+)"\s*/>', '-$1' `
            -replace '<c>(.*?)</c>', '$1' `
            -replace '<[^>]+>', ''
        $docs[$member.name] = ([System.Net.WebUtility]::HtmlDecode($xmlText) -replace '\s+', ' ').Trim()
    }
}
else {
    Write-Warning 'New-HelpMarkdown: no XML documentation given; new descriptions are placeholders.'
}

# --- Reading an existing file ---------------------------------------------------------------------------
function Read-ExistingMarkdown([string] $Path) {
    $lines = (Get-Content -LiteralPath $Path -Raw) -replace "`r`n", "`n" -split "`n"
    $result = [ordered]@{ FrontMatter = $null; Sections = [ordered]@{}; ParameterText = [ordered]@{}; Defaults = @{} }
    $start = 0
    if ($lines[0].Trim() -eq '---') {
        for ($j = 1; $j -lt $lines.Count; $j++) { if ($lines[$j].Trim() -eq '---') { break } }
        $result.FrontMatter = $lines[0..$j] -join "`n"
        $start = $j + 1
    }
    $section = $null
    $inFence = $false
    foreach ($line in $lines | Select-Object -Skip $start) {
        if ($line -match '^\s*(```|~~~)') { $inFence = -not $inFence }
        if (-not $inFence -and $line -match '^## (.+)$') {
            $section = $Matches[1].Trim().ToUpperInvariant()
            $result.Sections[$section] = [System.Collections.Generic.List[string]]::new()
            continue
        }
        if ($section) { $result.Sections[$section].Add($line) }
    }

    # Each parameter's prose (everything but its yaml blocks) and the "Default value" a human may have set.
    if ($result.Sections.Contains('PARAMETERS')) {
        $name = $null
        $inYaml = $false
        $inFence = $false
        foreach ($line in $result.Sections['PARAMETERS']) {
            if (-not $inFence -and $line -match '^### -?(\S+)') { $name = $Matches[1]; $result.ParameterText[$name] = [System.Collections.Generic.List[string]]::new(); continue }
            if (-not $name) { continue }
            if (-not $inFence -and $line -match '^\s*```yaml\s*$') { $inYaml = $true; $inFence = $true; continue }
            if ($line -match '^\s*(```|~~~)') {
                if ($inYaml) { $inYaml = $false; $inFence = $false; continue }
                $inFence = -not $inFence
            }
            if ($inYaml) {
                if ($line -match '^Default value:\s*(.+)$' -and $Matches[1].Trim() -notin 'None', 'False') { $result.Defaults[$name] = $Matches[1].Trim() }
                continue
            }
            $result.ParameterText[$name].Add($line)
        }
    }
    $result
}

function Format-Prose([System.Collections.Generic.List[string]] $Lines) {
    if ($null -eq $Lines) { return '' }
    ($Lines -join "`n").Trim("`n", ' ')
}

# --- Metadata to markdown -------------------------------------------------------------------------------
function Get-YamlBlocks($Command, $Parameter, [string] $Default) {
    $allSets = @($Command.ParameterSets.Name)
    $groups = [ordered]@{}
    foreach ($entry in $Parameter.ParameterSets.GetEnumerator()) {
        $meta = $entry.Value
        $pipeline = @()
        if ($meta.ValueFromPipelineByPropertyName) { $pipeline += 'ByPropertyName' }
        if ($meta.ValueFromPipeline) { $pipeline += 'ByValue' }
        $key = '{0}|{1}|{2}' -f $meta.IsMandatory, $(if ($meta.Position -eq [int]::MinValue) { 'Named' } else { $meta.Position }), $(if ($pipeline) { "True ($($pipeline -join ', '))" } else { 'False' })
        if (-not $groups.Contains($key)) { $groups[$key] = [System.Collections.Generic.List[string]]::new() }
        $groups[$key].Add($entry.Key)
    }
    $aliases = @($Parameter.Aliases) -join ', '
    $accepted = @($Parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.ValidateSetAttribute] } | ForEach-Object ValidValues)
    $wildcards = [bool]@($Parameter.Attributes | Where-Object { $_ -is [System.Management.Automation.SupportsWildcardsAttribute] }).Count
    $isSwitch = $Parameter.ParameterType -eq [System.Management.Automation.SwitchParameter]
    if (-not $Default) { $Default = if ($isSwitch) { 'False' } else { 'None' } }
    foreach ($group in $groups.GetEnumerator()) {
        $required, $position, $pipeline = $group.Key -split '\|'
        $sets = @($group.Value)
        # Sets in command order; a parameter in every set is "(All)", as PlatyPS writes it.
        $setsText = if ('__AllParameterSets' -in $sets -or ($groups.Count -eq 1 -and $allSets.Count -gt 1 -and @($allSets | Where-Object { $_ -notin $sets }).Count -eq 0)) { '(All)' }
        else { (@($allSets | Where-Object { $_ -in $sets }) -join ', ') }
        $lines = @(
            '```yaml'
            "Type: $(([Nullable]::GetUnderlyingType($Parameter.ParameterType) ?? $Parameter.ParameterType).Name)"
            "Parameter Sets: $setsText"
            "Aliases: $aliases".TrimEnd()
        )
        $accepted = @($accepted | Where-Object { $_ })  # an empty value in a ValidateSet stands for "not given"
        if ($accepted) { $lines += "Accepted values: $($accepted -join ', ')" }
        $lines += @(
            ''
            "Required: $(if ($required -eq 'True') { 'True' } else { 'False' })"
            "Position: $position"
            "Default value: $Default"
            "Accept pipeline input: $pipeline"
            "Accept wildcard characters: $(if ($wildcards) { 'True' } else { 'False' })"
            '```'
        )
        $lines -join "`n"
    }
}

function Get-DocumentedParameters($Command) {
    $skip = [System.Management.Automation.Cmdlet]::CommonParameters
    $names = @($Command.Parameters.Keys | Where-Object { $_ -notin $skip -and $_ -ne 'UseTransaction' })
    @($names | Where-Object { $_ -notin $LastParameters } | Sort-Object) + @($LastParameters | Where-Object { $_ -in $names })
}

function New-Markdown($Command, $Existing) {
    $name = $Command.Name
    $typeName = $Command.ImplementingType.FullName
    $sections = if ($Existing) { $Existing.Sections } else { [ordered]@{} }
    $keep = { param([string] $Section, [string] $Placeholder) $t = Format-Prose $sections[$Section]; if ($t) { $t } else { $Placeholder } }

    $out = [System.Collections.Generic.List[string]]::new()
    if ($Existing -and $Existing.FrontMatter) { $out.Add($Existing.FrontMatter) }
    else {
        $out.Add("---`nexternal help file: $($module.Name).dll-Help.xml`nModule Name: $($module.Name)`nonline version:`nschema: 2.0.0`n---")
    }
    $out.Add("`n# $name`n")

    $synopsisDraft = $docs["T:$typeName"]
    if ($synopsisDraft) { $synopsisDraft = $synopsisDraft -replace "^$([regex]::Escape($name)):\s*", '' }
    if ($synopsisDraft) { $synopsisDraft = $synopsisDraft.Substring(0, 1).ToUpperInvariant() + $synopsisDraft.Substring(1) }
    else { $synopsisDraft = '{{ Fill in the Synopsis }}' }
    $out.Add("## SYNOPSIS`n$(& $keep 'SYNOPSIS' $synopsisDraft)`n")

    $out.Add('## SYNTAX')
    $sets = @($Command.ParameterSets)
    foreach ($set in $sets) {
        $title = if ($set.IsDefault -and $sets.Count -gt 1) { "$($set.Name) (Default)" } else { $set.Name }
        $out.Add("`n### $title`n``````$("`n")$name $($set.ToString())`n``````")
    }
    $out.Add('')

    $out.Add("## DESCRIPTION`n$(& $keep 'DESCRIPTION' '{{ Fill in the Description }}')`n")
    $out.Add("## EXAMPLES`n`n$(& $keep 'EXAMPLES' "### Example 1`n``````powershell`nPS C:\> {{ Add example code here }}`n```````n`n{{ Add example description here }}")`n")

    $out.Add('## PARAMETERS')
    $documented = Get-DocumentedParameters $Command
    if ($Existing) {
        foreach ($gone in @($Existing.ParameterText.Keys | Where-Object { $_ -ne 'CommonParameters' -and $_ -notin $documented })) {
            Write-Warning "${name}: -$gone is no longer a parameter; its help is dropped."
        }
    }
    foreach ($p in $documented) {
        $parameter = $Command.Parameters[$p]
        $text = if ($Existing -and $Existing.ParameterText.Contains($p)) { Format-Prose $Existing.ParameterText[$p] } else { '' }
        if (-not $text) { $text = $docs["P:$typeName.$p"] }
        if (-not $text) {
            # Parameters a base class declares (VolumeCmdlet) are documented under that class; -WhatIf and -Confirm
            # are PowerShell's own (no property of the class) and take the standard descriptions below.
            $declaring = $Command.ImplementingType.GetProperty($p)?.DeclaringType?.FullName
            if ($declaring) { $text = $docs["P:$declaring.$p"] }
        }
        if (-not $text) { $text = $StandardDescriptions[$p] }
        if (-not $text) { $text = "{{ Fill $p Description }}" }
        $default = if ($Existing) { $Existing.Defaults[$p] } else { $null }
        $out.Add("`n### -$p`n$text`n")
        $out.Add(((Get-YamlBlocks $Command $parameter $default) -join "`n`n"))
    }
    $out.Add("`n### CommonParameters`n$CommonParametersText`n")

    $inputDraft = (@($Command.Parameters.Values | Where-Object { $_.Name -in $documented -and @($_.ParameterSets.Values | Where-Object { $_.ValueFromPipeline -or $_.ValueFromPipelineByPropertyName }).Count } |
            ForEach-Object { $_.ParameterType.FullName } | Select-Object -Unique | ForEach-Object { "### $_`n" }) -join "`n").Trim()
    if (-not $inputDraft) { $inputDraft = '### None' }
    $outputDraft = (@($Command.OutputType | ForEach-Object Name | Where-Object { $_ -and $_ -ne 'System.Void' } | Select-Object -Unique | ForEach-Object { "### $_`n" }) -join "`n").Trim()
    if (-not $outputDraft) { $outputDraft = '### None' }
    $out.Add("## INPUTS`n`n$(& $keep 'INPUTS' $inputDraft)`n")
    $out.Add("## OUTPUTS`n`n$(& $keep 'OUTPUTS' $outputDraft)`n")
    $out.Add("## NOTES`n$(& $keep 'NOTES' '')`n")
    $out.Add("## RELATED LINKS`n$(& $keep 'RELATED LINKS' '')")
    (($out -join "`n") -replace "\n{3,}", "`n`n").TrimEnd() + "`n"
}

foreach ($command in Get-Command -Module $module.Name -CommandType Cmdlet | Sort-Object Name) {
    $file = Join-Path $MarkdownPath "$($command.Name).md"
    $existing = if (Test-Path -LiteralPath $file) { Read-ExistingMarkdown $file } else { $null }
    $text = New-Markdown $command $existing
    $before = if ($existing) { Get-Content -LiteralPath $file -Raw } else { $null }
    if ($before -eq $text) { Write-Verbose "$($command.Name): up to date"; continue }
    if ($PSCmdlet.ShouldProcess($file, $(if ($existing) { 'Update SYNTAX and parameter metadata' } else { 'Create help markdown' }))) {
        [IO.File]::WriteAllText([IO.Path]::GetFullPath($file), $text, [System.Text.UTF8Encoding]::new($false))
        Write-Host "$(if ($existing) { 'Updated' } else { 'Created' }) $file"
    }
}
