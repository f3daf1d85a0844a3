#Requires -Version 7.4
# Test-Volume, Compare-Volume and Optimize-Volume against the built module, with qemu-img as the oracle.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)

    function New-PoolRoot {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build
        $root
    }

    # A 64 MiB qcow2 with data at 0 (1 MiB) and 32 MiB (128 KiB), as qemu writes it (refcount block at 0x20000).
    function New-DataImage([string] $Path) {
        qemu-img create -q -f qcow2 $Path 64M
        qemu-io -c 'write -q -P 0xab 0 1M' -c 'write -q -P 0xcd 32M 128k' $Path | Out-Null
    }

    function Set-Bytes([string] $Path, [long] $Offset, [byte[]] $Bytes) {
        $f = [IO.File]::Open($Path, 'Open', 'ReadWrite')
        try { $f.Position = $Offset; $f.Write($Bytes, 0, $Bytes.Length) } finally { $f.Dispose() }
    }

    function Get-QemuCheck([string] $Path) {
        $json = qemu-img check --output=json $Path 2>$null
        @{ Exit = $LASTEXITCODE; Result = ($json | ConvertFrom-Json -AsHashtable) }
    }
}

Describe 'Test-Volume' {
    BeforeEach {
        $script:root = New-PoolRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
    }

    It 'passes a fresh volume piped from Get-Volume, without asking anything' {
        New-Volume -Pool default -Name a.qcow2 -Size 1GB | Out-Null
        $r = Get-Volume -Pool default -Name a.qcow2 | Test-Volume -Confirm
        $r | Should -BeOfType ([KvmStorage.Core.Images.Check.ImageCheckResult])
        $r.Passed | Should -BeTrue
        $r.Errors | Should -Be 0
        $r.TotalClusters | Should -Be 16384
        $r.ImageEndOffset | Should -Be 262144
    }

    It 'passes raw images with nothing to check, from -Path wildcards and Get-ChildItem' {
        New-Volume -Pool default -Name r1.img -Size 1MB -Format raw | Out-Null
        New-Volume -Pool default -Name r2.img -Size 1MB -Format raw | Out-Null
        $r = Test-Volume -Path (Join-Path $images '*.img')
        $r | Should -HaveCount 2
        $r.Checked | Should -Be @($false, $false)
        (Get-ChildItem (Join-Path $images 'r1.img') | Test-Volume).Passed | Should -BeTrue
    }

    It 'resolves relative literal paths against the current location' {
        New-Volume -Pool default -Name a.qcow2 -Size 1MB | Out-Null
        Push-Location $images
        try { (Test-Volume -LiteralPath ./a.qcow2).Path | Should -Be '/var/lib/libvirt/images/a.qcow2' } finally { Pop-Location }
    }

    It 'counts a leak like qemu-img check and frees it with -Repair Leaks' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $file = Join-Path $images 'leak.qcow2'
        New-DataImage $file
        Set-Bytes $file (0x20000 + 10) ([byte[]](0, 2))
        $q = Get-QemuCheck $file
        $r = Test-Volume $file
        $r.Leaks | Should -Be $q.Result['leaks']
        $r.Errors | Should -Be ($q.Result['corruptions'] + $q.Result['check-errors'])
        $r.Passed | Should -BeFalse
        ($r.Corruptions | Where-Object Kind -EQ LeakedCluster).Offset | Should -Be 0x50000
        $fixed = Test-Volume $file -Repair Leaks -Confirm:$false
        $fixed.LeaksFixed | Should -Be 1
        $fixed.Passed | Should -BeTrue
        (Get-QemuCheck $file).Exit | Should -Be 0
    }

    It 'repairs a dirty image left by a killed lazy-refcount writer' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $file = Join-Path $images 'lazy.qcow2'
        qemu-img create -q -f qcow2 -o lazy_refcounts=on $file 64M
        qemu-io -c 'write -q -P 0xab 0 1M' -c 'sigraise 9' $file 2>$null | Out-Null
        $q = Get-QemuCheck $file
        $r = Test-Volume $file
        $r.DirtyFlag | Should -BeTrue
        $r.Errors | Should -Be $q.Result['corruptions']
        $fixed = Test-Volume $file -Repair All -Confirm:$false
        $fixed.DirtyFlag | Should -BeFalse
        $fixed.CorruptionsFixed | Should -Be $r.Errors
        (Get-QemuCheck $file).Exit | Should -Be 0
        qemu-io -c 'read -q -P 0xab 0 1M' $file | Out-Null
        $LASTEXITCODE | Should -Be 0
    }

    It 'changes nothing with -WhatIf -Repair All' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $file = Join-Path $images 'w.qcow2'
        New-DataImage $file
        Set-Bytes $file (0x20000 + 10) ([byte[]](0, 0))
        $before = Get-TreeSnapshot $root
        Test-Volume $file -Repair All -WhatIf | Should -BeNullOrEmpty
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'a missing file'; File = 'missing.qcow2'; Bytes = $null; Id = 'ImageNotFound' }
        @{ Case = 'a truncated qcow2 header'; File = 'bad.qcow2'; Bytes = [byte[]](0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3); Id = 'ImageHeaderTruncated' }
    ) {
        if ($Bytes) { [IO.File]::WriteAllBytes((Join-Path $images $File), $Bytes) }
        $before = Get-TreeSnapshot $root
        { Test-Volume (Join-Path $images $File) -Repair All -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.VolumeHealth.TestVolumeCommand"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses an unknown repair mode at binding' {
        { Test-Volume /nonexistent -Repair Everything } | Should -Throw -ErrorId 'CannotConvertArgumentNoMessage*'
    }

    It 'reports a bad item and goes on with the pipeline' {
        New-Volume -Pool default -Name ok.qcow2 -Size 1MB | Out-Null
        $r = @((Join-Path $images 'nope.qcow2'), (Join-Path $images 'ok.qcow2')) | Test-Volume -ErrorVariable err -ErrorAction SilentlyContinue
        $r | Should -HaveCount 1
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'ImageNotFound,*'
    }
}

Describe 'Compare-Volume' {
    BeforeEach {
        $script:root = New-PoolRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
    }

    It 'finds the same content in qcow2 and raw, piped from Get-Volume' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $a = Join-Path $images 'a.qcow2'
        New-DataImage $a
        qemu-img convert -O raw $a (Join-Path $images 'b.img')
        $r = Get-Volume -Pool default -Name b.img | Compare-Volume -ReferenceVolume (Get-Volume -Pool default -Name a.qcow2)
        $r | Should -BeOfType ([KvmStorage.Core.Images.Check.ImageCompareResult])
        $r.Identical | Should -BeTrue
        $r.FirstDifferenceOffset | Should -BeNullOrEmpty
    }

    It 'reports the first differing sector like qemu-img compare, and size differences with -Strict' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $a = Join-Path $images 'a.qcow2'
        New-DataImage $a
        $b = Join-Path $images 'b.img'
        qemu-img convert -O raw $a $b
        Set-Bytes $b (32MB + 70000) ([byte[]](7))
        $out = qemu-img compare $a $b
        $r = Compare-Volume $a $b
        $r.Identical | Should -BeFalse
        "Content mismatch at offset $($r.FirstDifferenceOffset)!" | Should -Be ($out | Select-Object -Last 1)
        $c = Join-Path $images 'c.img'
        qemu-img convert -O raw $a $c
        qemu-img resize -q -f raw $c 80M
        (Compare-Volume $a $c).Identical | Should -BeTrue
        (Compare-Volume $a $c -Strict).Identical | Should -BeFalse
    }

    It 'reports a missing image as an error and compares the others' {
        New-Volume -Pool default -Name x.qcow2 -Size 1MB | Out-Null
        $x = Join-Path $images 'x.qcow2'
        $r = @((Join-Path $images 'nope.qcow2'), $x) | Compare-Volume -ReferenceVolume $x -ErrorVariable err -ErrorAction SilentlyContinue
        $r.Identical | Should -BeTrue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'ImageNotFound,*'
    }
}

Describe 'Optimize-Volume' {
    BeforeEach {
        $script:root = New-PoolRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
    }

    It 'keeps an image that a compact rewrite would not make smaller, and says so' {
        $v = New-Volume -Pool default -Name empty.qcow2 -Size 1GB
        $hash = (Get-FileHash -LiteralPath $v.LocalPath).Hash
        $r = Optimize-Volume -Volume /var/lib/libvirt/images/empty.qcow2 -Compact -Confirm:$false
        $r.Compacted | Should -BeFalse
        $r.AllocatedAfter | Should -BeLessOrEqual $r.AllocatedBefore
        (Get-FileHash -LiteralPath $v.LocalPath).Hash | Should -Be $hash
        Get-ChildItem -Force $images -Filter '.kvmstorage-tmp-*' | Should -BeNullOrEmpty
    }

    It 'frees all-zero qcow2 clusters<Label>, keeping the content' -Tag Oracle -ForEach @(
        @{ Label = ''; Compact = $false }
        @{ Label = ' and compacts'; Compact = $true }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $file = Join-Path $images 'z.qcow2'
        qemu-img create -q -f qcow2 $file 64M
        qemu-io -c 'write -q -P 0xab 0 1M' -c 'write -q -P 0 1M 8M' $file | Out-Null
        $copy = Join-Path $TestDrive 'z-original.raw'
        qemu-img convert -O raw $file $copy
        $r = Get-Volume -Pool default -Name z.qcow2 | Optimize-Volume -Compact:$Compact -Confirm:$false
        $r | Should -BeOfType ([KvmStorage.Core.Images.Check.ImageOptimizeResult])
        $r.BytesFreed | Should -BeGreaterThan 4MB
        $r.Compacted | Should -Be $Compact
        qemu-img compare -f raw $copy $file | Out-Null
        $LASTEXITCODE | Should -Be 0
        (Test-Volume $file).Passed | Should -BeTrue
        Get-ChildItem -Force $images -Filter '.kvmstorage-tmp-*' | Should -BeNullOrEmpty
    }

    It 'punches holes over zeros in a raw image' {
        $file = Join-Path $images 'r.img'
        $bytes = [byte[]]::new(4MB)
        [IO.File]::WriteAllBytes($file, $bytes)
        $r = Optimize-Volume $file -Confirm:$false
        $r.Format | Should -BeExactly 'raw'
        $r.AllocatedAfter | Should -BeLessThan $r.AllocatedBefore
        (Get-Item $file).Length | Should -Be 4MB
    }

    It 'changes nothing with -WhatIf' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        New-DataImage (Join-Path $images 'w.qcow2')
        qemu-io -c 'write -q -P 0 2M 2M' (Join-Path $images 'w.qcow2') | Out-Null
        $before = Get-TreeSnapshot $root
        Optimize-Volume (Join-Path $images 'w.qcow2') -Compact -WhatIf | Should -BeNullOrEmpty
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -Tag Oracle -ForEach @(
        @{ Case = 'a missing file'; Damage = 'missing'; Id = 'ImageNotFound' }
        @{ Case = 'a qcow2 with a refcount error'; Damage = 'refcount'; Id = 'ImageCorrupt' }
        @{ Case = 'a vdi image'; Damage = 'vdi'; Id = 'UnsupportedImageFormat' }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $file = Join-Path $images 'f.img'
        switch ($Damage) {
            'refcount' { New-DataImage $file; Set-Bytes $file (0x20000 + 10) ([byte[]](0, 0)) }
            'vdi' { qemu-img create -q -f vdi $file 16M }
        }
        $before = Get-TreeSnapshot $root
        { Optimize-Volume $file -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.VolumeHealth.OptimizeVolumeCommand"
        Get-TreeSnapshot $root | Should -Be $before
    }
}
