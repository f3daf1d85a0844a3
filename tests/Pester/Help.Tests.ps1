#Requires -Version 7.4
# Help completeness of every exported cmdlet, read through Get-Help from the built module's MAML, and
# the markdown sources' examples checked as PowerShell.

BeforeDiscovery {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    $script:cmdlets = @(Get-Command -Module KvmStorage -CommandType Cmdlet | Sort-Object Name | ForEach-Object { @{ Name = $_.Name } })
    $markdownFolder = Join-Path $PSScriptRoot '../../en-US'
    $script:markdownFiles = @(Get-ChildItem -Path $markdownFolder -Filter '*.md' | ForEach-Object { @{ Name = $_.Name; Path = $_.FullName } })
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    $script:commonParameters = [System.Management.Automation.Cmdlet]::CommonParameters
}

Describe 'Help of <Name>' -ForEach $cmdlets {
    BeforeAll {
        $command = Get-Command -Module KvmStorage -Name $Name
        $help = Get-Help -Name $Name -Full
        $documented = @($help.parameters.parameter | Where-Object { $_ })
        $actual = @($command.Parameters.Keys | Where-Object { $_ -notin $commonParameters })
    }

    It 'has a written synopsis, not the generated syntax' {
        $synopsis = "$($help.Synopsis)".Trim()
        $synopsis | Should -Not -BeNullOrEmpty
        $synopsis | Should -Not -BeLike "$Name *"
        $synopsis | Should -Not -Match '\[<CommonParameters>\]'
    }

    It 'has a description' {
        ($help.description.Text -join '').Trim() | Should -Not -BeNullOrEmpty
    }

    It 'has at least two examples, each with code' {
        $examples = @($help.examples.example)
        $examples.Count | Should -BeGreaterOrEqual 2
        foreach ($example in $examples) {
            "$($example.code)".Trim() | Should -Not -BeNullOrEmpty -Because "example '$($example.title)' needs code"
        }
    }

    It 'documents -<_> with a description' -ForEach @(Get-Command -Module KvmStorage -Name $Name).Parameters.Keys.Where({ $_ -notin [System.Management.Automation.Cmdlet]::CommonParameters }) {
        $parameterHelp = $documented | Where-Object name -EQ $_
        $parameterHelp | Should -Not -BeNullOrEmpty -Because "-$_ is a parameter of $Name"
        ($parameterHelp.description.Text -join '').Trim() | Should -Not -BeNullOrEmpty -Because "-$_ needs a description"
    }

    It 'documents no parameter the cmdlet does not have' {
        $extra = @($documented.name | Where-Object { $_ -notin $actual })
        $extra | Should -BeNullOrEmpty
    }

    It 'documents the required flag and position of every parameter as the cmdlet declares them' {
        foreach ($p in $documented) {
            $meta = $command.Parameters[$p.name].ParameterSets.Values
            $p.required | Should -BeIn @(($meta | ForEach-Object { $_.IsMandatory.ToString().ToLowerInvariant() }) | Select-Object -Unique) -Because "-$($p.name) Required"
            $positions = @($meta | ForEach-Object { if ($_.Position -eq [int]::MinValue) { 'named' } else { "$($_.Position)" } })
            $p.position.ToLowerInvariant() | Should -BeIn $positions -Because "-$($p.name) Position"
        }
    }
}

Describe 'about_KvmStorage' {
    It 'is found by Get-Help' {
        $about = Get-Help -Name about_KvmStorage
        $about | Should -Not -BeNullOrEmpty
        "$about" | Should -Match 'KVMSTORAGE_ROOT'
    }

    It 'names every exported cmdlet' {
        $about = "$(Get-Help -Name about_KvmStorage)"
        $missing = @((Get-Command -Module KvmStorage -CommandType Cmdlet).Name | Where-Object { $about -notmatch "\b$([regex]::Escape($_))\b" })
        $missing | Should -BeNullOrEmpty -Because 'about_KvmStorage lists every command'
    }

    It 'does not promise a backend that exists as "later"' {
        "$(Get-Help -Name about_KvmStorage)" | Should -Not -Match 'later release'
    }
}

Describe 'Examples in <Name>' -ForEach $markdownFiles {
    It 'parse as PowerShell' {
        $text = Get-Content -Raw -LiteralPath $Path
        $examples = $text.Substring([Math]::Max(0, $text.IndexOf('## EXAMPLES')))
        $examples = $examples.Substring(0, $examples.IndexOf('## PARAMETERS'))
        $blocks = [regex]::Matches($examples, '(?ms)^```powershell\s*\n(.*?)^```')
        $blocks.Count | Should -BeGreaterOrEqual 2
        foreach ($block in $blocks) {
            $tokens = $null; $errors = $null
            $null = [System.Management.Automation.Language.Parser]::ParseInput($block.Groups[1].Value, [ref] $tokens, [ref] $errors)
            $errors | Should -BeNullOrEmpty -Because $block.Groups[1].Value
            # Pasteable as they stand: no prompt pasted in front of a command.
            $block.Groups[1].Value | Should -Not -Match '(?m)^\s*PS[^>\n]*>' -Because 'an example is pasted into a shell as it is'
        }
    }
}
