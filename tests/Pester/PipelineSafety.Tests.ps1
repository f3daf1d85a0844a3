#Requires -Version 7.4
# Pipelines from the user's side: every Get-* fed each object type the module emits, a record with Pool and Name (as
# Import-Csv makes it), a record naming only a pool, and a string returns exactly what the object names, or an error,
# never more. And -WhatIf of the removers promises exactly the items the real run then changes.

BeforeDiscovery {
    # What each input names, for each Get-*: the expected result is computed in the test from the fixture.
    $script:table = @(
        @{ Cmd = 'Get-Volume'; Kind = 'pool'; Expect = 'the pool''s volumes' }
        @{ Cmd = 'Get-Volume'; Kind = 'volume'; Expect = 'that volume' }
        @{ Cmd = 'Get-Volume'; Kind = 'disk'; Expect = 'the disk''s volume' }
        @{ Cmd = 'Get-Volume'; Kind = 'snapshot'; Expect = 'the snapshot''s volume' }
        @{ Cmd = 'Get-Volume'; Kind = 'record'; Expect = 'that volume' }
        @{ Cmd = 'Get-Volume'; Kind = 'pool-record'; Expect = 'an error' }
        @{ Cmd = 'Get-Volume'; Kind = 'string'; Expect = 'the volumes of that name' }
        @{ Cmd = 'Get-Volume'; Kind = 'file'; Expect = 'that volume' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'pool'; Expect = 'that pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'volume'; Expect = 'its pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'disk'; Expect = 'its pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'snapshot'; Expect = 'its pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'record'; Expect = 'its pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'pool-record'; Expect = 'that pool' }
        @{ Cmd = 'Get-StoragePool'; Kind = 'string'; Expect = 'that pool' }
        @{ Cmd = 'Get-VMDisk'; Kind = 'pool'; Expect = 'an error' }
        @{ Cmd = 'Get-VMDisk'; Kind = 'volume'; Expect = 'the disks using it' }
        @{ Cmd = 'Get-VMDisk'; Kind = 'disk'; Expect = 'that disk' }
        @{ Cmd = 'Get-VMDisk'; Kind = 'record'; Expect = 'an error' }
        @{ Cmd = 'Get-VMDisk'; Kind = 'string'; Expect = 'that VM''s disks' }
        @{ Cmd = 'Get-VolumeSnapshot'; Kind = 'pool'; Expect = 'an error' }
        @{ Cmd = 'Get-VolumeSnapshot'; Kind = 'volume'; Expect = 'its snapshots' }
        @{ Cmd = 'Get-VolumeSnapshot'; Kind = 'disk'; Expect = 'its volume''s snapshots' }
        @{ Cmd = 'Get-VolumeSnapshot'; Kind = 'record'; Expect = 'an error' }
        @{ Cmd = 'Get-VolumeSnapshot'; Kind = 'pool-record'; Expect = 'an error' }
    )

    # Every cmdlet that works on existing volumes one at a time names one the same ways (VolumeCmdlet, and the same
    # sets on Remove- and Resize-Volume). Each form names spare1.qcow2 of pool default.
    $script:volumeCmdlets = @('Test-Volume', 'Optimize-Volume', 'Resize-Volume', 'Export-Volume', 'Set-Volume', 'Remove-Volume')
    $script:namings = foreach ($c in $volumeCmdlets) {
        # Remove- and Resize-Volume keep the first two positions for pool and name, as Get-Volume does.
        $positional = if ($c -in 'Remove-Volume', 'Resize-Volume') { @() } else { @('positional-path') }
        foreach ($form in @('object', 'volume-parameter') + $positional + @('pool-and-name', 'piped-name-with-pool', 'piped-path', 'record', 'wildcard-path', 'literal-path', 'file')) {
            @{ Cmd = $c; Form = $form }
        }
    }
    $script:refusals = foreach ($c in $volumeCmdlets) {
        foreach ($form in 'piped-name-without-pool', 'pool-object', 'pool-record') {
            @{ Cmd = $c; Form = $form }
        }
    }
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force

    function New-PipelineRoot {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        New-StoragePool -Name other -Path /srv/other -Build | Out-Null
        New-Item -ItemType Directory -Force (Join-Path $root 'etc/libvirt/qemu') | Out-Null
        Copy-Item (Join-Path $PSScriptRoot '../../examples/kvm1.xml') (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')
        foreach ($n in 'kvm1.img', 'data.qcow2', 'spare1.qcow2', 'spare2.raw') {
            $fmt = if ($n -like '*.qcow2') { 'qcow2' } else { 'raw' }
            New-Volume -Pool default -Name $n -Size 16MB -Format $fmt | Out-Null
        }
        New-Volume -Pool other -Name data.qcow2 -Size 16MB | Out-Null
        New-VolumeSnapshot -Volume /var/lib/libvirt/images/data.qcow2 -Name before | Out-Null
        Add-VMDisk -VMName kvm1 -Pool default -Name kvm1.img | Out-Null
        Add-VMDisk -VMName kvm1 -Pool default -Name data.qcow2 | Out-Null
        $root
    }

    function Invoke-WhatIfChild([string] $Command) {
        # ShouldProcess writes "What if:" to the host, not to a stream: run the command in a child pwsh and read its output.
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        [string[]] $prefix = @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $first })
        $module = $env:KVMSTORAGE_TEST_MODULE -replace "'", "''"
        $out = & $exe @prefix -NoProfile -NonInteractive -Command "Import-Module '$module'; $Command" 2>&1
        @($out | ForEach-Object { "$_" })
    }

    function Get-Input([string] $Kind) {
        switch ($Kind) {
            'pool' { Get-StoragePool default }
            'volume' { Get-Volume -Pool default -Name data.qcow2 }
            'disk' { Get-VMDisk kvm1 -Target vdb }
            'snapshot' { Get-VolumeSnapshot -Volume /var/lib/libvirt/images/data.qcow2 }
            'record' { [pscustomobject]@{ Pool = 'default'; Name = 'data.qcow2' } }
            'pool-record' { [pscustomobject]@{ Pool = 'default' } }
            'string' { 'data.qcow2' }
            'file' { Get-Item -LiteralPath (Join-Path $root 'var/lib/libvirt/images/data.qcow2') }
        }
    }
}

Describe 'Every Get-* fed each object type returns what it names, never more' {
    BeforeAll { $script:root = New-PipelineRoot }

    It '<Kind> | <Cmd> gives <Expect>' -ForEach $table {
        $in = Get-Input $Kind
        if ($Cmd -eq 'Get-StoragePool' -and $Kind -eq 'string') { $in = 'default' }
        if ($Cmd -eq 'Get-VMDisk' -and $Kind -eq 'string') { $in = 'kvm1' }
        $out = @($in | & $Cmd -ErrorAction SilentlyContinue -ErrorVariable e)
        switch -Wildcard ($Expect) {
            'an error' {
                $out | Should -BeNullOrEmpty
                $e.Count | Should -BeGreaterThan 0
            }
            'the pool''s volumes' {
                @($out.Name | Sort-Object) | Should -Be @('data.qcow2', 'kvm1.img', 'spare1.qcow2', 'spare2.raw')
                @($out.Pool | Sort-Object -Unique) | Should -Be @('default')
            }
            'that volume' { $out.Count | Should -Be 1; $out[0].Path | Should -Be '/var/lib/libvirt/images/data.qcow2' }
            'the disk''s volume' { $out.Count | Should -Be 1; $out[0].Path | Should -Be '/var/lib/libvirt/images/data.qcow2' }
            'the snapshot''s volume' { $out.Count | Should -Be 1; $out[0].Path | Should -Be '/var/lib/libvirt/images/data.qcow2' }
            'the volumes of that name' { @($out.Path | Sort-Object) | Should -Be @('/srv/other/data.qcow2', '/var/lib/libvirt/images/data.qcow2') }
            'that pool' { $out.Count | Should -Be 1; $out[0].Name | Should -Be 'default' }
            'its pool' { $out.Count | Should -Be 1; $out[0].Name | Should -Be 'default' }
            'the disks using it' { $out.Count | Should -Be 1; $out[0].Target | Should -Be 'vdb'; $out[0].Source | Should -Be '/var/lib/libvirt/images/data.qcow2' }
            'that disk' { $out.Count | Should -Be 1; $out[0].Target | Should -Be 'vdb' }
            'that VM''s disks' { @($out.Target | Sort-Object) | Should -Be @(Get-VMDisk -VMName kvm1 | ForEach-Object Target | Sort-Object); @($out.VMName | Sort-Object -Unique) | Should -Be @('kvm1') }
            '*snapshots' { $out.Count | Should -Be 1; $out[0].Name | Should -Be 'before'; $out[0].Path | Should -Be '/var/lib/libvirt/images/data.qcow2' }
        }
        if ($Expect -eq 'an error') { return }
        $e | Should -BeNullOrEmpty
    }

    It 'a string piped to Get-VMDisk is a VM name, not a volume' {
        { 'data.qcow2' | Get-VMDisk -ErrorAction Stop } | Should -Throw -ErrorId 'VMNotFound,*'
        @('kvm1' | Get-VMDisk).Count | Should -Be (@(Get-VMDisk kvm1).Count)
    }
}

Describe 'Every volume cmdlet names a volume the same ways' {
    BeforeAll {
        $script:root = New-PipelineRoot

        # What each cmdlet is given besides the volume, and how its output (or the pool) shows which volume it took.
        $script:extra = @{
            'Test-Volume' = @{}
            'Optimize-Volume' = @{ Confirm = $false }
            'Resize-Volume' = @{ Delta = 1MB; PassThru = $true; Confirm = $false }
            'Export-Volume' = @{ Confirm = $false }
            'Set-Volume' = @{ BackingVolume = $null; PassThru = $true; Confirm = $false }
            'Remove-Volume' = @{ Confirm = $false }
        }

        function Invoke-Naming {
            [CmdletBinding()]
            param([string] $Cmd, [string] $Form, [hashtable] $With)
            $hostPath = '/var/lib/libvirt/images/spare1.qcow2'
            switch ($Form) {
                'object' { Get-Volume default spare1.qcow2 | & $Cmd @With }
                'positional-path' { & $Cmd $hostPath @With }
                'volume-parameter' { & $Cmd -Volume $hostPath @With }
                'pool-and-name' { & $Cmd -Pool default -Name spare1.qcow2 @With }
                'piped-name-with-pool' { 'spare1.qcow2' | & $Cmd -Pool default @With }
                'piped-path' { $hostPath | & $Cmd @With }
                'record' {
                    $csv = Join-Path $TestDrive ('n-' + [guid]::NewGuid().ToString('N').Substring(0, 6) + '.csv')
                    [pscustomobject]@{ Pool = 'default'; Name = 'spare1.qcow2' } | Export-Csv -LiteralPath $csv
                    Import-Csv -LiteralPath $csv | & $Cmd @With
                }
                'wildcard-path' { & $Cmd -Path '/var/lib/libvirt/images/spare1.q*' @With }
                'literal-path' { & $Cmd -LiteralPath $hostPath @With }
                'file' { Get-Item -LiteralPath (Join-Path $root 'var/lib/libvirt/images/spare1.qcow2') | & $Cmd @With }
                'piped-name-without-pool' { 'spare1.qcow2' | & $Cmd @With }
                'pool-object' { Get-StoragePool default | & $Cmd @With }
                'pool-record' { [pscustomobject]@{ Pool = 'default' } | & $Cmd @With }
            }
        }
    }

    BeforeEach {
        # spare1.qcow2 fresh for each case (Remove-Volume deletes it, Resize-Volume grows it).
        Remove-Item -LiteralPath (Join-Path $root 'var/lib/libvirt/images/spare1.qcow2') -Force -ErrorAction SilentlyContinue
        New-Volume -Pool default -Name spare1.qcow2 -Size 16MB | Out-Null
        $script:exportTo = Join-Path $TestDrive ('export-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory $exportTo | Out-Null
    }

    It '<Cmd>: <Form> names spare1.qcow2 and nothing else' -ForEach $namings {
        $with = $extra[$Cmd].Clone()
        if ($Cmd -eq 'Export-Volume') { $with.Destination = $exportTo }
        $others = Get-HostSnapshot $root | Where-Object { $_ -notlike '*spare1.qcow2*' }
        $out = @(Invoke-Naming $Cmd $Form $with -ErrorAction SilentlyContinue -ErrorVariable e)
        $e | Should -BeNullOrEmpty
        switch ($Cmd) {
            'Remove-Volume' { Test-Path -LiteralPath (Join-Path $root 'var/lib/libvirt/images/spare1.qcow2') | Should -BeFalse }
            'Export-Volume' { $out.Count | Should -Be 1; Split-Path -Leaf $out[0].Path | Should -Be 'spare1.qcow2' }
            'Resize-Volume' { $out.Count | Should -Be 1; $out[0].Path | Should -Be '/var/lib/libvirt/images/spare1.qcow2'; $out[0].Capacity | Should -Be 17MB }
            default { $out.Count | Should -Be 1; $out[0].Path | Should -Be '/var/lib/libvirt/images/spare1.qcow2' }
        }
        Get-HostSnapshot $root | Where-Object { $_ -notlike '*spare1.qcow2*' } | Should -Be $others
    }

    It '<Cmd>: <Form> is refused with VolumeNotNamed and changes nothing' -ForEach $refusals {
        $with = $extra[$Cmd].Clone()
        if ($Cmd -eq 'Export-Volume') { $with.Destination = $exportTo }
        $before = Get-HostSnapshot $root
        $out = @(Invoke-Naming $Cmd $Form $with -ErrorAction SilentlyContinue -ErrorVariable e)
        $out | Should -BeNullOrEmpty
        $e.Count | Should -Be 1
        "$($e[0].FullyQualifiedErrorId)" | Should -BeLike 'VolumeNotNamed,*'
        Get-HostSnapshot $root | Should -Be $before
        @(Get-ChildItem -LiteralPath $exportTo) | Should -BeNullOrEmpty
    }
}

Describe 'Error messages name files as the objects do (host view), not by their place under the root' {
    BeforeAll { $script:root = New-PipelineRoot }

    It 'engine failures of <Cmd> show host paths' -ForEach @(
        @{ Cmd = 'Set-Volume' }, @{ Cmd = 'Optimize-Volume' }, @{ Cmd = 'Test-Volume' }, @{ Cmd = 'Get-Volume' }
    ) {
        $images = Join-Path $root 'var/lib/libvirt/images'
        if (-not (Test-Path -LiteralPath "$images/top.qcow2")) {
            New-Volume default gone.qcow2 -Size 16MB | Out-Null
            New-Volume default top.qcow2 -Size 16MB -BackingVolume /var/lib/libvirt/images/gone.qcow2 | Out-Null
            Remove-Item -LiteralPath "$images/gone.qcow2"
            # A qcow2 header whose cluster_bits is 0: every reader refuses it.
            $bytes = [byte[]]::new(4096)
            [byte[]](0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3) | ForEach-Object -Begin { $i = 0 } -Process { $bytes[$i++] = $_ }
            [IO.File]::WriteAllBytes("$images/bad.qcow2", $bytes)
        }
        switch ($Cmd) {
            'Set-Volume' { Set-Volume /var/lib/libvirt/images/top.qcow2 -BackingVolume $null -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e }
            'Optimize-Volume' { Optimize-Volume /var/lib/libvirt/images/bad.qcow2 -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e }
            'Test-Volume' { Test-Volume /var/lib/libvirt/images/bad.qcow2 -ErrorAction SilentlyContinue -ErrorVariable e }
            'Get-Volume' { Get-Volume -LiteralPath /var/lib/libvirt/images/bad.qcow2 -ErrorAction SilentlyContinue -ErrorVariable e }
        }
        $e.Count | Should -Be 1
        "$($e[0])" | Should -BeLike '*/var/lib/libvirt/images/*'
        "$($e[0])" | Should -Not -BeLike "*$root*"
    }
}

Describe 'Confirmation fits the harm (ConfirmImpact), checked in a non-interactive child where a prompt is an error' {
    BeforeEach { $script:root = New-PipelineRoot }

    It 'Remove-VMDisk that only detaches does not ask; with -DeleteVolume it asks' {
        $before = Get-HostSnapshot $root
        $asked = Invoke-WhatIfChild 'Remove-VMDisk -VMName kvm1 -Target vdb -DeleteVolume'
        ($asked -join "`n") | Should -Match 'NonInteractive|prompt'
        Get-HostSnapshot $root | Should -Be $before
        $out = @(Invoke-WhatIfChild 'Remove-VMDisk -VMName kvm1 -Target vdb; "rc=$?"')
        $out[-1] | Should -Be 'rc=True'
        Get-VMDisk kvm1 -Target vdb -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath (Join-Path $root 'var/lib/libvirt/images/data.qcow2') | Should -BeTrue
    }

    It 'Resize-Volume grows without asking, asks before -Shrink, and shrinks with -Confirm:$false' {
        $out = @(Invoke-WhatIfChild 'Resize-Volume default spare2.raw -Size 32MB; "rc=$?"')
        $out[-1] | Should -Be 'rc=True'
        $before = Get-HostSnapshot $root
        $asked = Invoke-WhatIfChild 'Resize-Volume default spare2.raw -Size 8MB -Shrink'
        ($asked -join "`n") | Should -Match 'NonInteractive|prompt'
        Get-HostSnapshot $root | Should -Be $before
        (Resize-Volume default spare2.raw -Size 8MB -Shrink -Confirm:$false -PassThru).Capacity | Should -Be 8MB
    }
}

Describe 'Removers from a pipeline never widen, and -WhatIf promises what the real run does' {
    BeforeEach { $script:root = New-PipelineRoot }

    It 'Get-VMDisk -Target vda | Get-Volume | Remove-Volume removes nothing but that (attached, so refused) volume' {
        $before = @(Get-Volume -Pool default).Name | Sort-Object
        Get-VMDisk -VMName kvm1 -Target vda | Get-Volume | Remove-Volume -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e
        "$($e[0].FullyQualifiedErrorId)" | Should -BeLike 'VolumeAttachedToVM,*'
        @(Get-Volume -Pool default).Name | Sort-Object | Should -Be $before
    }

    It 'a CSV record with Pool and Name removes that one volume' {
        $csv = Join-Path $TestDrive ('v-' + [guid]::NewGuid().ToString('N').Substring(0, 6) + '.csv')
        [pscustomobject]@{ Pool = 'default'; Name = 'spare1.qcow2' } | Export-Csv -LiteralPath $csv
        Import-Csv -LiteralPath $csv | Remove-Volume -Confirm:$false
        @(Get-Volume -Pool default).Name | Sort-Object | Should -Be @('data.qcow2', 'kvm1.img', 'spare2.raw')
    }

    It 'a record naming only a pool, and a pool object, are refused by Remove-Volume' {
        $before = Get-HostSnapshot $root
        [pscustomobject]@{ Pool = 'default' } | Remove-Volume -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e1
        Get-StoragePool default | Remove-Volume -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2
        "$($e1[0].FullyQualifiedErrorId)" | Should -BeLike 'VolumeNotNamed,*'
        "$($e2[0].FullyQualifiedErrorId)" | Should -BeLike 'VolumeNotNamed,*'
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'Remove-VMDisk -DeleteVolume says before asking that an image another image builds on is kept, and keeps it' {
        New-Volume -Pool default -Name clone.qcow2 -BackingVolume /var/lib/libvirt/images/data.qcow2 | Out-Null
        $whatIf = @(Invoke-WhatIfChild 'Remove-VMDisk -VMName kvm1 -Target vdb -DeleteVolume -WhatIf' | Where-Object { $_ -like 'What if:*' })
        $whatIf.Count | Should -Be 1
        $whatIf[0] | Should -Match 'its image is kept'
        $whatIf[0] | Should -Not -Match 'delete its image'
        Remove-VMDisk -VMName kvm1 -Target vdb -DeleteVolume -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e
        "$($e[0].FullyQualifiedErrorId)" | Should -BeLike 'VolumeIsBackingFile,*'
        Get-VMDisk kvm1 -Target vdb -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path -LiteralPath (Join-Path $root 'var/lib/libvirt/images/data.qcow2') | Should -BeTrue
    }

    It 'strings piped to Remove-Volume are names in -Pool' {
        'spare1.qcow2', 'spare2.raw' | Remove-Volume -Pool default -Confirm:$false
        @(Get-Volume -Pool default).Name | Sort-Object | Should -Be @('data.qcow2', 'kvm1.img')
    }

    It '-WhatIf of Remove-Volume on the whole pool lists exactly what the real run deletes' {
        $whatIf = @(Invoke-WhatIfChild 'Get-Volume -Pool default | Remove-Volume -WhatIf -ErrorAction SilentlyContinue' | Where-Object { $_ -like 'What if:*' })
        Get-Volume -Pool default | Remove-Volume -Confirm:$false -ErrorAction SilentlyContinue
        $left = @(Get-Volume -Pool default).Name
        $deleted = @('data.qcow2', 'kvm1.img', 'spare1.qcow2', 'spare2.raw') | Where-Object { $_ -notin $left }
        @($deleted | Sort-Object) | Should -Be @('spare1.qcow2', 'spare2.raw')
        $whatIf.Count | Should -Be $deleted.Count
        foreach ($d in $deleted) { @($whatIf | Where-Object { $_ -like "*/$d*" }).Count | Should -Be 1 }
    }
}
