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
        Get-VMDisk kvm1 -Target vdb | Should -BeNullOrEmpty
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
