#Requires -Version 7.4
# Hostile input, table-driven: every case is refused with a clear typed error and changes nothing on disk.
# Names with traversal and control characters, symlinks out of a pool, backing files that are no images,
# crafted qcow2/vmdk metadata, XML with DTDs and entities, absurd sizes; plus file modes and a source scan.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemuImg = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)

    function New-HostileRoot {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $images = Join-Path $root 'var/lib/libvirt/images'
        New-Volume -Pool default -Name good.qcow2 -Size 64MB | Out-Null
        New-Item -ItemType Directory -Force (Join-Path $root 'etc/libvirt/qemu') | Out-Null
        Copy-Item (Join-Path $PSScriptRoot '../../examples/kvm1.xml') (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')
        # Secrets and special files "on the host": outside every pool.
        New-Item -ItemType Directory -Force (Join-Path $root 'etc'), (Join-Path $root 'run') | Out-Null
        Set-Content -LiteralPath (Join-Path $root 'etc/shadow') -Value 'root:$6$secret-hash:19000:0:99999:7:::'
        & mkfifo (Join-Path $root 'run/fifo')
        $root
    }

    function Set-Bytes([string] $Path, [long] $Offset, [byte[]] $Bytes) {
        $fs = [IO.File]::Open($Path, 'Open', 'ReadWrite')
        try { $fs.Position = $Offset; $fs.Write($Bytes, 0, $Bytes.Length) } finally { $fs.Dispose() }
    }

    function ConvertTo-BigEndian([ulong] $Value, [int] $Size) {
        $b = [BitConverter]::GetBytes($Value); [Array]::Reverse($b); $b[(8 - $Size)..7]
    }

    # The snapshot leaves out /run, which holds a FIFO (reading it would block; the tests never write there).
    function Get-HostSnapshot([string] $Root) {
        foreach ($sub in @(Get-ChildItem -LiteralPath $Root -Directory -Force | Where-Object Name -NE 'run')) { Get-TreeSnapshot $sub.FullName | ForEach-Object { "$($sub.Name)$_" } }
        @(Get-ChildItem -LiteralPath $Root -Force).Name -join ','
    }

    function Assert-Refused {
        <# The action must fail with a KvmStorage error id (matching $ErrorId when given) and leave the tree as it was. #>
        param([scriptblock] $Action, [string] $ErrorId, [string] $Root)
        $before = Get-HostSnapshot $Root
        $caught = $null
        # Per-item errors of the cmdlets are non-terminating: inside the action they must stop it.
        $ErrorActionPreference = 'Stop'
        try { & $Action | Out-Null } catch { $caught = $_ }
        $ErrorActionPreference = 'Continue'
        $caught | Should -Not -BeNullOrEmpty -Because 'the hostile input must be refused'
        $id = "$($caught.FullyQualifiedErrorId)"
        $id | Should -Match '^[A-Z][A-Za-z0-9]+(,|$)' -Because "a typed error id is expected, got '$id': $caught"
        $id | Should -Not -Match '^(System\.|RuntimeException|MethodInvocation)' -Because "$caught"
        if ($ErrorId) { $id | Should -BeLike "$ErrorId,*" -Because "$caught" }
        "$caught" | Should -Not -BeNullOrEmpty
        Get-HostSnapshot $Root | Should -Be $before
    }
}

Describe 'Hostile volume and pool names' {
    BeforeAll { $script:root = New-HostileRoot }

    It 'New-Volume refuses the name <Label>' -ForEach @(
        @{ Label = 'parent traversal'; Name = '../escape.qcow2' }
        @{ Label = 'deep traversal'; Name = '../../../../etc/cron.d/x' }
        @{ Label = 'an absolute path'; Name = '/etc/evil.qcow2' }
        @{ Label = 'a sub-folder'; Name = 'sub/dir.qcow2' }
        @{ Label = '.'; Name = '.' }
        @{ Label = '..'; Name = '..' }
        @{ Label = 'an empty name'; Name = '' }
        @{ Label = 'a newline'; Name = "a`nb.qcow2" }
        @{ Label = 'a carriage return'; Name = "a`rb.qcow2" }
        @{ Label = 'a tab'; Name = "a`tb.qcow2" }
        @{ Label = 'NUL'; Name = "a$([char]0)b.qcow2" }
        @{ Label = 'an escape sequence'; Name = "a$([char]27)[31mred.qcow2" }
        @{ Label = 'the temporary prefix'; Name = '.kvmstorage-tmp-x.qcow2' }
        @{ Label = 'a 300-character name'; Name = ('x' * 300) }
    ) {
        Assert-Refused { New-Volume -Pool default -Name $Name -Size 1MB } -Root $root
    }

    It '<Cmd> refuses the volume name <Name>' -ForEach @(
        foreach ($cmd in 'Get-Volume', 'Remove-Volume', 'Resize-Volume') {
            foreach ($n in '../../etc/shadow', '/etc/shadow', 'x/../../../etc/shadow') { @{ Cmd = $cmd; Name = $n } }
        }
    ) {
        $action = switch ($Cmd) {
            'Get-Volume' { { Get-Volume -Pool default -Name $Name } }
            'Remove-Volume' { { Remove-Volume -Pool default -Name $Name -Confirm:$false } }
            'Resize-Volume' { { Resize-Volume -Pool default -Name $Name -Size 1GB } }
        }
        Assert-Refused $action -Root $root
    }

    It 'New-StoragePool refuses the pool name <Label>' -ForEach @(
        @{ Label = 'parent traversal'; Name = '../evil' }
        @{ Label = 'an absolute path'; Name = '/etc/libvirt/evil' }
        @{ Label = 'a slash'; Name = 'a/b' }
        @{ Label = '.'; Name = '.' }
        @{ Label = '..'; Name = '..' }
        @{ Label = 'an empty name'; Name = '' }
        @{ Label = 'a newline'; Name = "pool`nname" }
        @{ Label = 'NUL'; Name = "p$([char]0)" }
        @{ Label = 'an escape sequence'; Name = "p$([char]27)]0;title" }
        @{ Label = 'a 300-character name'; Name = ('p' * 300) }
    ) {
        Assert-Refused { New-StoragePool -Name $Name -Path /srv/evil -Build } -Root $root
    }

    It 'New-StoragePool refuses the target path <Path>' -ForEach @(
        @{ Path = 'relative/folder' }
        @{ Path = '/srv/../etc' }
        @{ Path = '/srv/./x' }
        @{ Path = "/srv/a`nb" }
    ) {
        Assert-Refused { New-StoragePool -Name evilpath -Path $Path -Build } -Root $root
    }
}

Describe 'Names not stored as given, and files larger than the file system holds' {
    BeforeAll {
        $script:root = New-HostileRoot
        $script:disk = Join-Path $root 'var/lib/libvirt/images/good.qcow2'
    }

    It '<Cmd> refuses the name <Label>' -ForEach @(
        $ids = @{ 'New-StoragePool' = 'InvalidPoolName'; 'New-Volume' = 'InvalidVolumeName'; 'New-VolumeSnapshot' = 'InvalidSnapshotName' }
        foreach ($cmd in $ids.Keys | Sort-Object) {
            # The names are built here, not written in the labels: a test name must stay printable.
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'with a lone high surrogate'; Name = "s$([char]0xD800).qcow2" }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'with a lone low surrogate'; Name = "s$([char]0xDC00).qcow2" }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'with U+202E (right-to-left override)'; Name = "evil$([char]0x202E)2woc.qcow2" }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'with U+200B (zero-width space)'; Name = "s$([char]0x200B).qcow2" }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'of white space only'; Name = '   ' }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'with a tab'; Name = "a`tb.qcow2" }
            @{ Cmd = $cmd; Id = $ids[$cmd]; Label = 'of 300 bytes (150 characters)'; Name = 'é' * 150 }
        }
    ) {
        $action = switch ($Cmd) {
            'New-StoragePool' { { New-StoragePool -Name $Name -Path /srv/hostile -Build } }
            'New-Volume' { { New-Volume -Pool default -Name $Name -Size 1MB } }
            'New-VolumeSnapshot' { { New-VolumeSnapshot -Volume $disk -Name $Name } }
        }
        Assert-Refused $action -ErrorId $Id -Root $root
        "$($Error[0])" | Should -Not -Match '[\p{Cc}\p{Cf}\p{Cs}]' -Because 'the message names a hidden character as U+XXXX'
        @(Get-StoragePool).Name | Should -Be @('default')
        @(Get-VolumeSnapshot -Volume $disk).Count | Should -Be 0
    }

    Context 'a file larger than the largest file the file system holds' {
        BeforeAll {
            New-Volume -Pool default -Name small.raw -Format raw -Size 1MB | Out-Null
            New-Volume -Pool default -Name huge.qcow2 -Size 20TB | Out-Null
            # A qcow2 named .img: -Replace keeps the name, and .img may hold raw (a .qcow2 may not).
            New-Volume -Pool default -Name huge.img -Format qcow2 -Size 20TB | Out-Null
            # ext2/3/4 address a file's blocks with 32-bit numbers: at most (2^32 - 1) blocks, 16 TiB with 4 KiB
            # blocks. Other file systems (xfs, btrfs, tmpfs) hold 20 TiB, so there is nothing to refuse there.
            $images = Join-Path $root 'var/lib/libvirt/images'
            $type = & stat -f -c %T $images
            $script:limit = if ($type -like 'ext*') { [uint64][uint32]::MaxValue * [uint64](& stat -f -c %S $images) }
            $script:skipReason = if (-not $limit -or $limit -ge 20TB) { "the test root's file system ($type) holds a 20 TiB file" }
        }

        It '<Label> is refused with FileTooLarge' -ForEach @(
            @{ Label = 'New-Volume -Format raw -Size 20TB'; Action = { New-Volume -Pool default -Name big.raw -Format raw -Size 20TB } }
            @{ Label = 'New-Volume -Format raw -Size 20TB -Preallocation falloc'; Action = { New-Volume -Pool default -Name big.raw -Format raw -Size 20TB -Preallocation Falloc } }
            @{ Label = 'Resize-Volume of a raw image to 20TB'; Action = { Resize-Volume -Pool default -Name small.raw -Size 20TB } }
            @{ Label = 'Convert-Volume -Format raw of a 20TB qcow2'; Action = { Get-Volume -Pool default -Name huge.qcow2 | Convert-Volume -Format raw } }
            @{ Label = 'Convert-Volume -Format raw -Replace of a 20TB qcow2'; Action = { Get-Volume -Pool default -Name huge.img | Convert-Volume -Format raw -Replace -Confirm:$false } }
        ) {
            if ($skipReason) { Set-ItResult -Skipped -Because $skipReason; return }
            Assert-Refused $Action -ErrorId 'FileTooLarge' -Root $root
            "$($Error[0])" | Should -Match "at most .* \($limit bytes\)" -Because 'the message names the limit'
        }
    }
}

Describe 'Hostile sizes' {
    BeforeAll { $script:root = New-HostileRoot }

    It 'New-Volume refuses the size <Size>' -ForEach @(
        @{ Size = '-1' }, @{ Size = '-5G' }, @{ Size = 'lots' }, @{ Size = '18446744073709551615' }, @{ Size = '16E' }, @{ Size = '1e30' }
    ) {
        Assert-Refused { New-Volume -Pool default -Name sized.qcow2 -Size $Size } -Root $root
    }

    It 'Resize-Volume refuses the size <Size>' -ForEach @(
        @{ Size = '-1' }, @{ Size = '18446744073709551615' }, @{ Size = '8E' }
    ) {
        Assert-Refused { Resize-Volume -Pool default -Name good.qcow2 -Size $Size } -Root $root
    }
}

Describe 'Backing files that are not images' {
    BeforeAll { $script:root = New-HostileRoot }

    It 'New-Volume refuses <Label> as backing file' -ForEach @(
        @{ Label = 'a secret outside every pool (/etc/shadow)'; Backing = '/etc/shadow'; Id = 'BackingFileNotAllowed' }
        @{ Label = 'a FIFO'; Backing = '/run/fifo'; Id = $null }
        @{ Label = 'a folder'; Backing = '/etc'; Id = $null }
        @{ Label = 'a missing file'; Backing = '/nowhere/base.qcow2'; Id = $null }
    ) {
        Assert-Refused { New-Volume -Pool default -Name clone.qcow2 -BackingVolume (Join-Path $root $Backing.TrimStart('/')) } -ErrorId $Id -Root $root
    }

    It 'Get-Volume refuses a qcow2 whose backing file is a FIFO, without blocking' -Tag Oracle {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $img = Join-Path $root 'var/lib/libvirt/images/fifo-backed.qcow2'
        qemu-img create -q -f qcow2 -u -b /run/fifo -F raw $img 1M
        try { Assert-Refused { Get-Volume -Pool default -Name fifo-backed.qcow2 } -ErrorId 'BackingFileNotRegular' -Root $root }
        finally { Remove-Item -LiteralPath $img }
    }

    It 'Get-Volume reports a qcow2 naming /etc/shadow as backing without reading it as part of the chain' -Tag Oracle {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $img = Join-Path $root 'var/lib/libvirt/images/shadow-backed.qcow2'
        qemu-img create -q -f qcow2 -u -b /etc/shadow -F qcow2 $img 1M
        try {
            # The recorded format is qcow2 and the file is text: reading it as qcow2 fails, and nothing of it is reported.
            $before = Get-HostSnapshot $root
            $v = Get-Volume -Pool default -Name shadow-backed.qcow2 -ErrorAction SilentlyContinue -ErrorVariable e
            if ($v) { $v.Chain.Count | Should -Be 1; "$($v | Format-List * | Out-String)" | Should -Not -Match 'secret-hash' }
            else { "$e" | Should -Not -Match 'secret-hash' }
            Get-HostSnapshot $root | Should -Be $before
        }
        finally { Remove-Item -LiteralPath $img }
    }
}

Describe 'Symlinks in a pool folder pointing outside it' {
    BeforeAll {
        $script:root = New-HostileRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'shadow.img') -Target (Join-Path $root 'etc/shadow') | Out-Null
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'outside.qcow2') -Target '/etc/passwd' | Out-Null
    }

    It 'the listing reports <Link> as an error and still lists the good volume' -ForEach @(@{ Link = 'shadow.img' }, @{ Link = 'outside.qcow2' }) {
        $vols = @(Get-Volume -Pool default -ErrorVariable e -ErrorAction SilentlyContinue)
        $vols.Name | Should -Contain 'good.qcow2'
        $vols.Name | Should -Not -Contain $Link
        @($e | Where-Object { "$_" -like "*$Link*" }).Count | Should -Be 1
        ($e | Where-Object { "$_" -like "*$Link*" }).FullyQualifiedErrorId | Should -BeLike 'VolumeOutsidePool,*'
    }

    It '<Label> through the link is refused' -ForEach @(
        @{ Label = 'Get-Volume'; Action = { Get-Volume -Pool default -Name shadow.img } }
        @{ Label = 'Remove-Volume'; Action = { Remove-Volume -Pool default -Name shadow.img -Confirm:$false } }
        @{ Label = 'Remove-Volume -Force'; Action = { Remove-Volume -Pool default -Name outside.qcow2 -Force -Confirm:$false } }
        @{ Label = 'Resize-Volume'; Action = { Resize-Volume -Pool default -Name shadow.img -Size 1GB } }
        @{ Label = 'New-Volume over the link'; Action = { New-Volume -Pool default -Name outside.qcow2 -Size 1MB } }
        @{ Label = 'Add-VMDisk of the link'; Action = { Add-VMDisk -VMName kvm1 -Volume (Join-Path $images 'shadow.img') } }
    ) {
        Assert-Refused $Action -Root $root
        (Get-Content -Raw -LiteralPath (Join-Path $root 'etc/shadow')) | Should -Match 'secret-hash'
    }
}

Describe 'Crafted image metadata' -Tag Oracle {
    BeforeAll {
        $script:root = New-HostileRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        function New-Crafted([string] $Name, [scriptblock] $Patch) {
            $p = Join-Path $images $Name
            qemu-img create -q -f qcow2 -o cluster_size=512 $p 1M
            & $Patch $p
            $p
        }
        if ($hasQemuImg) {
            # l1_size claims 2^28 entries (2 GiB of L1, mapping ~32 TiB with 512-byte clusters).
            New-Crafted l1-huge.qcow2 { param($p) Set-Bytes $p 36 (ConvertTo-BigEndian 0x10000000 4) } | Out-Null
            # The refcount table points at the header cluster: the refcount "blocks" are the header itself.
            New-Crafted refcount-loop.qcow2 { param($p) Set-Bytes $p 48 (ConvertTo-BigEndian 0 8) } | Out-Null
            # The L1 table lies past the end of the file.
            New-Crafted l1-past-end.qcow2 { param($p) Set-Bytes $p 40 (ConvertTo-BigEndian 0x100000000 8) } | Out-Null
            # A backing chain that loops: a -> b -> a.
            qemu-img create -q -f qcow2 -u -b loop-b.qcow2 -F qcow2 (Join-Path $images 'loop-a.qcow2') 1M
            qemu-img create -q -f qcow2 -u -b loop-a.qcow2 -F qcow2 (Join-Path $images 'loop-b.qcow2') 1M
            # A truncated header.
            [IO.File]::WriteAllBytes((Join-Path $images 'truncated.qcow2'), [byte[]](0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3))
            # A vmdk descriptor whose extents lie outside the pool folder.
            Set-Content -LiteralPath (Join-Path $images 'escape.vmdk') -Value @'
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"
RW 2048 FLAT "../../../../etc/shadow" 0
RW 2048 FLAT "/etc/shadow" 0
ddb.virtualHWVersion = "4"
'@
        }
    }

    It 'Resize-Volume refuses <Name> with a typed error and leaves it unchanged' -ForEach @(
        @{ Name = 'l1-huge.qcow2' }, @{ Name = 'refcount-loop.qcow2' }, @{ Name = 'l1-past-end.qcow2' }, @{ Name = 'truncated.qcow2' }, @{ Name = 'loop-a.qcow2' }, @{ Name = 'escape.vmdk' }
    ) {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        Assert-Refused { Resize-Volume -Pool default -Name $Name -Size 64GB } -Root $root
    }

    It 'Get-Volume refuses <Name> with a typed error' -ForEach @(
        @{ Name = 'l1-huge.qcow2' }, @{ Name = 'l1-past-end.qcow2' }, @{ Name = 'truncated.qcow2' }, @{ Name = 'loop-a.qcow2' }
    ) {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        Assert-Refused { Get-Volume -Pool default -Name $Name } -Root $root
    }

    It 'Get-Volume reads only the descriptor of a vmdk whose extents lie outside the folder' {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $before = Get-HostSnapshot $root
        $v = Get-Volume -Pool default -Name escape.vmdk -ErrorAction SilentlyContinue -ErrorVariable e
        "$($v | Format-List * | Out-String) $e" | Should -Not -Match 'secret-hash'
        Get-HostSnapshot $root | Should -Be $before
    }
}

Describe 'One L2 table named by every L1 entry (work bounded by what the file holds)' -Tag Oracle {
    BeforeAll {
        $script:root = New-HostileRoot
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        $script:shared = Join-Path $images 'shared-l2.qcow2'
        $script:small = Join-Path $images 'shared-l2-small.qcow2'
        if ($hasQemuImg) {
            # 1 PiB with 64 KiB clusters: 2,097,152 L1 entries, each made to name the one L2 table of the first
            # written cluster, so the image "holds" a petabyte of data in a 16 MiB file. The small one (1 TiB, 2,048
            # entries) is cheap enough for qemu-img check, the oracle.
            foreach ($case in @(@{ Path = $shared; Size = '1P' }, @{ Path = $small; Size = '1T' })) {
                qemu-img create -q -f qcow2 $case.Path $case.Size
                qemu-io -c 'write -q -P 0x5a 0 64k' $case.Path | Out-Null
                $fs = [IO.File]::Open($case.Path, 'Open', 'ReadWrite')
                try {
                    $head = [byte[]]::new(48); [void]$fs.Read($head, 0, 48)
                    [Array]::Reverse($head, 36, 4); $l1Size = [BitConverter]::ToUInt32($head, 36)
                    [Array]::Reverse($head, 40, 8); $l1Offset = [BitConverter]::ToInt64($head, 40)
                    $fs.Position = $l1Offset; $first = [byte[]]::new(8); [void]$fs.Read($first, 0, 8)
                    $table = [byte[]]::new($l1Size * 8)
                    [Buffer]::BlockCopy($first, 0, $table, 0, 8)
                    for ($n = 8; $n -lt $table.Length; $n *= 2) { [Buffer]::BlockCopy($table, 0, $table, $n, [Math]::Min($n, $table.Length - $n)) }
                    $fs.Position = $l1Offset; $fs.Write($table, 0, $table.Length)
                }
                finally { $fs.Dispose() }
            }
        }
    }

    It '<Label> is refused at open (SharedImageMappingTable), leaving everything unchanged' -ForEach @(
        @{ Label = 'Compare-Volume'; Action = { Compare-Volume /var/lib/libvirt/images/shared-l2.qcow2 /var/lib/libvirt/images/shared-l2.qcow2 } }
        @{ Label = 'Convert-Volume'; Action = { Convert-Volume /var/lib/libvirt/images/shared-l2.qcow2 -Format raw -Name out.raw } }
        @{ Label = 'Copy-Volume'; Action = { Copy-Volume /var/lib/libvirt/images/shared-l2.qcow2 -Name out.qcow2 } }
        @{ Label = 'Export-Volume'; Action = { Export-Volume /var/lib/libvirt/images/shared-l2.qcow2 -Destination (Join-Path $TestDrive 'out.qcow2') } }
    ) {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        Assert-Refused $Action -ErrorId 'SharedImageMappingTable' -Root $root
    }

    It 'Test-Volume finds it corrupt after walking the shared table once, and refuses writes into it' {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $before = Get-HostSnapshot $root
        $r = Test-Volume /var/lib/libvirt/images/shared-l2.qcow2
        $r.CorruptionCount | Should -BeGreaterThan 0
        Get-HostSnapshot $root | Should -Be $before
        Assert-Refused { Resize-Volume default shared-l2.qcow2 -Delta 1GB } -ErrorId 'ImageCheckFailed' -Root $root
        Assert-Refused { New-VolumeSnapshot /var/lib/libvirt/images/shared-l2.qcow2 -Name s1 } -ErrorId 'ImageCheckFailed' -Root $root
    }

    It 'qemu-img check agrees that such an image is corrupt (small variant)' {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        & qemu-img check -q $small *> $null
        $LASTEXITCODE | Should -Be 2
        (Test-Volume /var/lib/libvirt/images/shared-l2-small.qcow2).CorruptionCount | Should -BeGreaterThan 0
    }
}

Describe 'Hostile XML' {
    BeforeAll {
        $script:root = New-HostileRoot
        $script:bodies = @{
            Dtd          = "<?xml version='1.0'?>`n<!DOCTYPE {0} [<!ELEMENT {0} ANY>]>`n<{0} type='{1}'><name>{2}</name></{0}>"
            External     = "<?xml version='1.0'?>`n<!DOCTYPE {0} [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>`n<{0} type='{1}'><name>{2}</name><description>&x;</description></{0}>"
            BillionLaughs = "<?xml version='1.0'?>`n<!DOCTYPE {0} [<!ENTITY a 'lol'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'><!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'><!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'><!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'><!ENTITY i '&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;'>]>`n<{0} type='{1}'><name>{2}</name><description>&i;</description></{0}>"
            Garbage      = "<{0} type='{1}'><name>{2}</name"
        }
    }

    It 'a pool file with <Kind> is reported as a typed error' -ForEach @(
        @{ Kind = 'Dtd' }, @{ Kind = 'External' }, @{ Kind = 'BillionLaughs' }, @{ Kind = 'Garbage' }, @{ Kind = 'WrongRoot' }
    ) {
        $file = Join-Path $root 'etc/libvirt/storage/evil.xml'
        $text = if ($Kind -eq 'WrongRoot') { "<domain type='kvm'><name>evil</name></domain>" } else { $bodies[$Kind] -f 'pool', 'dir', 'evil' }
        Set-Content -LiteralPath $file -Value $text
        try {
            Assert-Refused { Get-StoragePool -Name evil } -Root $root
            Assert-Refused { New-Volume -Pool evil -Name x.qcow2 -Size 1MB } -Root $root
        }
        finally { Remove-Item -LiteralPath $file }
    }

    It 'a domain file with <Kind> is reported as a typed error and not edited' -ForEach @(
        @{ Kind = 'Dtd' }, @{ Kind = 'External' }, @{ Kind = 'BillionLaughs' }, @{ Kind = 'Garbage' }, @{ Kind = 'WrongRoot' }
    ) {
        $file = Join-Path $root 'etc/libvirt/qemu/evil.xml'
        $text = if ($Kind -eq 'WrongRoot') { "<pool type='dir'><name>evil</name><target><path>/x</path></target></pool>" } else { $bodies[$Kind] -f 'domain', 'kvm', 'evil' }
        Set-Content -LiteralPath $file -Value $text
        try {
            Assert-Refused { Get-VMDisk -VMName evil } -Root $root
            Assert-Refused { Get-Volume -Pool default -Name good.qcow2 | Add-VMDisk -VMName evil } -Root $root
        }
        finally { Remove-Item -LiteralPath $file }
    }
}

Describe 'File modes and process hygiene' {
    It 'creates images mode 0600 and pool folders 0711' {
        $root = New-TestHostRoot
        New-StoragePool -Name modes -Path /srv/modes -Build | Out-Null
        (Get-Item (Join-Path $root 'srv/modes')).UnixMode | Should -Be 'drwx--x--x'
        foreach ($f in 'qcow2', 'raw') {
            $v = New-Volume -Pool modes -Name "m.$f" -Size 1MB -Format $f
            (Get-Item $v.LocalPath).UnixMode | Should -Be '-rw-------'
        }
    }

    It 'never starts an external process (no Process.Start or ProcessStartInfo in src/)' {
        $src = Join-Path $PSScriptRoot '../../src'
        $hits = @(Get-ChildItem -LiteralPath $src -Recurse -Filter *.cs | Where-Object { $_.FullName -notmatch '[\\/](bin|obj)[\\/]' } |
            Select-String -Pattern 'Process\.Start|ProcessStartInfo|System\.Diagnostics\.Process\b|posix_spawn|\bexecv|\bfork\(' |
            ForEach-Object { "$($_.Path):$($_.LineNumber): $($_.Line.Trim())" })
        $hits | Should -BeNullOrEmpty
    }
}
