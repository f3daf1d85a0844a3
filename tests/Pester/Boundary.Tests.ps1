#Requires -Version 7.4
# The boundary of what the module may read and write, from the user's side: every cmdlet that reads or writes images
# is run against a table of escapes (backing names that are host files, traversal out of the pool and out of the host
# root, pool symlinks that lead out, a pool folder linked out of the root, relative and absolute user paths) with a
# canary file outside the root. Before and after: a hash of the whole root (outside the pool folder) and of its
# surroundings. Nothing outside the pools changes, no output and no file under the root holds a canary byte, and every
# refusal carries a typed KvmStorage error id.

BeforeDiscovery {
    $script:hasQemuImg = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)
    if (-not $hasQemuImg) { Write-Host 'Boundary tests skipped: qemu-img/qemu-io are not installed (they craft the hostile images)' -ForegroundColor Yellow }

    # Images in the pool whose backing names try to reach outside it. Each is read by every command below.
    $script:escapes = @(
        @{ Image = 'abs-secret.qcow2'; Label = 'an absolute name of a host secret, raw' }
        @{ Image = 'abs-noformat.qcow2'; Label = 'an absolute name of a host secret, no format (probed)' }
        @{ Image = 'climb-raw.qcow2'; Label = 'a relative name climbing out of the host root to a raw file' }
        @{ Image = 'climb-qcow2.qcow2'; Label = 'a relative name climbing out of the host root to a qcow2' }
        @{ Image = 'via-link-out.qcow2'; Label = 'a pool symlink that leads out of the host root' }
        @{ Image = 'via-link-secret.qcow2'; Label = 'a pool symlink to a secret inside the root, outside the pools' }
    )
    $script:readers = @(
        @{ Cmd = 'Get-Volume'; Action = { param($p) Get-Volume -Path $p } }
        @{ Cmd = 'Convert-Volume'; Action = { param($p) Convert-Volume -Volume $p -Format raw -Name ('conv-' + [IO.Path]::GetFileName($p) + '.raw') } }
        @{ Cmd = 'Convert-Volume -Replace'; Action = { param($p) Convert-Volume -Volume $p -Format qcow2 -Replace -Confirm:$false } }
        @{ Cmd = 'Copy-Volume'; Action = { param($p) Copy-Volume -Volume $p -Name ('copy-' + [IO.Path]::GetFileName($p)) } }
        @{ Cmd = 'Export-Volume'; Action = { param($p) Export-Volume -Volume $p -Destination (Join-Path $exports ([IO.Path]::GetFileName($p) + '.raw')) } }
        @{ Cmd = 'Set-Volume -BackingVolume $null'; Action = { param($p) Set-Volume -Volume $p -BackingVolume $null -Confirm:$false } }
        @{ Cmd = 'Merge-Volume'; Action = { param($p) Merge-Volume -Volume $p -Confirm:$false } }
        @{ Cmd = 'Compare-Volume'; Action = { param($p) Compare-Volume -ReferenceVolume /var/lib/libvirt/images/good.qcow2 -DifferenceVolume $p } }
        @{ Cmd = 'New-Volume -BackingVolume'; Action = { param($p) New-Volume -Pool default -Name ('clone-' + [IO.Path]::GetFileName($p)) -BackingVolume $p } }
    )
    $script:cases = foreach ($e in $escapes) { foreach ($r in $readers) { @{ Image = $e.Image; Label = $e.Label; Cmd = $r.Cmd; Action = $r.Action } } }

    # Writers given a pool symlink that leads out of the pool (and out of the root).
    $script:linkWriters = @(
        @{ Cmd = 'Test-Volume -Repair All'; Action = { Test-Volume -Volume /var/lib/libvirt/images/out.qcow2 -Repair All -Confirm:$false } }
        @{ Cmd = 'Optimize-Volume (qcow2)'; Action = { Optimize-Volume -Volume /var/lib/libvirt/images/out.qcow2 -Confirm:$false } }
        @{ Cmd = 'Optimize-Volume (raw)'; Action = { Optimize-Volume -Volume /var/lib/libvirt/images/out.raw -Confirm:$false } }
        @{ Cmd = 'Optimize-Volume -Compact'; Action = { Optimize-Volume -Volume /var/lib/libvirt/images/out.qcow2 -Compact -Confirm:$false } }
        @{ Cmd = 'Resize-Volume'; Action = { Resize-Volume -Pool default -Name out.qcow2 -Size 4MB -Confirm:$false } }
        @{ Cmd = 'New-VolumeSnapshot'; Action = { New-VolumeSnapshot -Volume /var/lib/libvirt/images/out.qcow2 -Name s1 } }
        @{ Cmd = 'Set-Volume'; Action = { Set-Volume -Volume /var/lib/libvirt/images/out.qcow2 -BackingVolume /var/lib/libvirt/images/good.qcow2 -Unsafe -Confirm:$false } }
        @{ Cmd = 'Convert-Volume -Replace'; Action = { Convert-Volume -Volume /var/lib/libvirt/images/out.raw -Format qcow2 -Replace -Confirm:$false } }
        @{ Cmd = 'Remove-Volume'; Action = { Remove-Volume -Pool default -Name out.qcow2 -Force -Confirm:$false } }
        @{ Cmd = 'Add-VMDisk -Path'; Action = { Add-VMDisk -VMName kvm1 -Path /var/lib/libvirt/images/out.qcow2 -Force } }
        @{ Cmd = 'Test-Volume -Repair of the link by local path'; Action = { Test-Volume -LiteralPath (Join-Path $images out.qcow2) -Repair All -Confirm:$false } }
        @{ Cmd = 'Restore-VolumeSnapshot'; Action = { Restore-VolumeSnapshot -Volume /var/lib/libvirt/images/out.qcow2 -Name s1 -Confirm:$false } }
        @{ Cmd = 'Remove-VolumeSnapshot'; Action = { Remove-VolumeSnapshot -Volume /var/lib/libvirt/images/out.qcow2 -Name s1 -Confirm:$false } }
        @{ Cmd = 'Get-VolumeSnapshot'; Action = { Get-VolumeSnapshot -Volume /var/lib/libvirt/images/out.qcow2 } }
        @{ Cmd = 'Get-Volume -Path'; Action = { Get-Volume -Path /var/lib/libvirt/images/out.raw } }
        @{ Cmd = 'Set-VMDisk -Path (cdrom media)'; Action = { Set-VMDisk -VMName kvm1 -Target sda -Path /var/lib/libvirt/images/out.raw -Confirm:$false } }
        @{ Cmd = 'Compare-Volume'; Action = { Compare-Volume -ReferenceVolume /var/lib/libvirt/images/good.qcow2 -DifferenceVolume /var/lib/libvirt/images/out.qcow2 } }
        @{ Cmd = 'Export-Volume'; Action = { Export-Volume -Volume /var/lib/libvirt/images/out.qcow2 -Destination (Join-Path $exports 'out.raw') } }
    )
    # Everything that touches a pool whose folder is a link out of the host root.
    $script:poolEscapes = @(
        @{ Cmd = 'Get-Volume -Pool'; Action = { Get-Volume -Pool escape } }
        @{ Cmd = 'New-Volume'; Action = { New-Volume -Pool escape -Name new.qcow2 -Size 1MB } }
        @{ Cmd = 'Import-Volume'; Action = { Import-Volume -Path (Join-Path $images good.qcow2) -Pool escape -Name imported.qcow2 } }
        @{ Cmd = 'Convert-Volume -Pool'; Action = { Convert-Volume -Volume /var/lib/libvirt/images/good.qcow2 -Format raw -Pool escape -Name conv.raw } }
        @{ Cmd = 'Copy-Volume -Pool'; Action = { Copy-Volume -Volume /var/lib/libvirt/images/good.qcow2 -Pool escape -Name copy.qcow2 } }
        @{ Cmd = 'Get-Volume -Path in it'; Action = { Get-Volume -Path /srv/escape/inside.qcow2 } }
    )
    # Paths the user types that leave the root.
    $script:userPaths = @(
        @{ Cmd = 'Test-Volume -Repair, an absolute path outside the root (read as a host path)'; Id = 'ImageNotFound'; Action = { Test-Volume -LiteralPath (Join-Path $outside victim.qcow2) -Repair All -Confirm:$false } }
        @{ Cmd = 'Optimize-Volume, a relative path climbing out of the root'; Id = 'PathOutsideHostRoot'; Action = { Push-Location $images; try { Optimize-Volume -Volume ../../../../../outside/canary.raw -Confirm:$false } finally { Pop-Location } } }
        @{ Cmd = 'Get-Volume -LiteralPath, a file from Get-ChildItem outside the root'; Id = 'PathOutsideHostRoot'; Action = { Get-ChildItem -LiteralPath (Join-Path $outside victim.qcow2) | Get-Volume } }
        @{ Cmd = 'Add-VMDisk -Path, a traversal out of the root (an absolute path is the host''s, under the root)'; Id = 'ImageNotFound'; Action = { Add-VMDisk -VMName kvm1 -Path "$images/../../../../../outside/victim.qcow2" -Force } }
        @{ Cmd = 'Merge-Volume -Base outside the root'; Id = $null; Action = { Merge-Volume -Volume /var/lib/libvirt/images/over-other.qcow2 -Base (Join-Path $outside victim.qcow2) -Confirm:$false } }
    )
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force

    function Invoke-Qemu([string] $Tool) {
        $out = & $Tool @args 2>&1
        if ($LASTEXITCODE) { throw "$Tool $args failed: $out" }
    }

    $script:world = Join-Path $TestDrive ('world-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
    $script:root = Join-Path $world 'root'
    $script:outside = Join-Path $world 'outside'
    $script:exports = Join-Path $TestDrive ('exports-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Force $root, $outside, $exports | Out-Null
    $env:KVMSTORAGE_ROOT = $root
    $script:canary = 'CANARY-' + [guid]::NewGuid().ToString('N')
    $script:secret = 'SECRET-' + [guid]::NewGuid().ToString('N')
    $script:images = Join-Path $root 'var/lib/libvirt/images'

    if ($hasQemuImg) {
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        New-Volume -Pool default -Name good.qcow2 -Size 1MB | Out-Null
        New-Item -ItemType Directory -Force (Join-Path $root 'etc/libvirt/qemu'), (Join-Path $root 'srv/other') | Out-Null
        Copy-Item (Join-Path $PSScriptRoot '../../examples/kvm1.xml') (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')

        # Outside the root: a raw canary (1 MiB of its text) and a qcow2 holding the same bytes.
        $line = [Text.Encoding]::ASCII.GetBytes(($canary + "`n"))
        $bytes = [byte[]]::new(1MB); for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = $line[$i % $line.Length] }
        [IO.File]::WriteAllBytes((Join-Path $outside 'canary.raw'), $bytes)
        Invoke-Qemu qemu-img convert -q -f raw -O qcow2 (Join-Path $outside 'canary.raw') (Join-Path $outside 'victim.qcow2')
        New-Item -ItemType Directory (Join-Path $outside 'escape-folder') | Out-Null
        # Inside the root, outside every pool: a secret, and a qcow2 (a recognised image) an overlay names as its base.
        Set-Content -LiteralPath (Join-Path $root 'etc/shadow') -Value "root:`$6`$$secret:19000:0:99999:7:::"
        Invoke-Qemu qemu-img create -q -f qcow2 (Join-Path $root 'srv/other/base.qcow2') 1M

        function New-Overlay([string] $Name, [string[]] $Backing) {
            Invoke-Qemu qemu-img create -q -f qcow2 -u @Backing (Join-Path $images $Name) 1M
        }
        New-Overlay abs-secret.qcow2 @('-b', '/etc/shadow', '-F', 'raw')
        # qemu-img 7.2 insists on a backing format: record one, then turn its header extension (magic 0xE2792ACA) into
        # an unknown one, which readers skip, so the image names its backing file without a format (probed as raw).
        New-Overlay abs-noformat.qcow2 @('-b', '/etc/shadow', '-F', 'raw')
        $noFormat = Join-Path $images 'abs-noformat.qcow2'
        $head = [IO.File]::ReadAllBytes($noFormat)
        for ($i = 72; $i -lt 4096; $i++) {
            if ($head[$i] -eq 0xE2 -and $head[$i + 1] -eq 0x79 -and $head[$i + 2] -eq 0x2A -and $head[$i + 3] -eq 0xCA) {
                $fs = [IO.File]::Open($noFormat, 'Open', 'ReadWrite'); try { $fs.Position = $i; $fs.Write([byte[]](0x4B, 0x56, 0x4D, 0x00), 0, 4) } finally { $fs.Dispose() }
                break
            }
        }
        (& qemu-img info --output=json -U $noFormat | ConvertFrom-Json).'backing-filename-format' | Should -BeNullOrEmpty
        New-Overlay climb-raw.qcow2 @('-b', '../../../../../outside/canary.raw', '-F', 'raw')
        New-Overlay climb-qcow2.qcow2 @('-b', '../../../../../outside/victim.qcow2', '-F', 'qcow2')
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'link-out.raw') -Target (Join-Path $outside 'canary.raw') | Out-Null
        New-Overlay via-link-out.qcow2 @('-b', 'link-out.raw', '-F', 'raw')
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'link-secret.raw') -Target (Join-Path $root 'etc/shadow') | Out-Null
        New-Overlay via-link-secret.qcow2 @('-b', 'link-secret.raw', '-F', 'raw')
        # An overlay whose base lies inside the root but outside every pool, holding data to merge.
        $otherBase = Join-Path $root 'srv/other/base.qcow2'
        New-Overlay over-other.qcow2 @('-b', $otherBase, '-F', 'qcow2')
        Invoke-Qemu qemu-io -c 'write -P 0x5a 0 64k' -f qcow2 (Join-Path $images over-other.qcow2)
        Invoke-Qemu qemu-img rebase -u -b /srv/other/base.qcow2 -F qcow2 (Join-Path $images over-other.qcow2)
        # Pool links out of the pool (and of the root): a qcow2 and a raw file.
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'out.qcow2') -Target (Join-Path $outside 'victim.qcow2') | Out-Null
        New-Item -ItemType SymbolicLink -Path (Join-Path $images 'out.raw') -Target (Join-Path $outside 'canary.raw') | Out-Null
        # A pool whose folder is (later) a link out of the root.
        New-StoragePool -Name escape -Path /srv/escape | Out-Null
        New-Item -ItemType SymbolicLink -Path (Join-Path $root 'srv/escape') -Target (Join-Path $outside 'escape-folder') | Out-Null
        Invoke-Qemu qemu-img create -q -f qcow2 (Join-Path $outside 'escape-folder/inside.qcow2') 1M
    }

    # What must never change: everything in the world but the pool folder, and (separately) the exports folder.
    function Get-Surroundings {
        Get-TreeSnapshot $world | Where-Object { $_ -notlike '/root/var/lib/libvirt/images/*' }
    }

    function Assert-Contained {
        <# The action fails with a typed KvmStorage error (matching $ErrorId when given), leaks no canary or secret, and changes nothing outside the pool. #>
        param([scriptblock] $Action, [object[]] $Arguments = @(), [string] $ErrorId)
        $before = Get-Surroundings
        $caught = $null
        $output = $null
        $ErrorActionPreference = 'Stop'
        try { $output = & $Action @Arguments 2>&1 | Out-String -Width 400 } catch { $caught = $_ }
        $ErrorActionPreference = 'Continue'
        $caught | Should -Not -BeNullOrEmpty -Because "the command must be refused (output: $output)"
        $id = "$($caught.FullyQualifiedErrorId)"
        $id | Should -Match '^[A-Z][A-Za-z0-9]+,KvmStorage' -Because "a typed error id is expected, got '$id': $caught"
        if ($ErrorId) { $id | Should -BeLike "$ErrorId,*" -Because "$caught" }
        "$output $caught $($caught.Exception.InnerException)" | Should -Not -Match "$canary|$secret"
        Get-Surroundings | Should -Be $before
        @(Get-ChildItem -LiteralPath $exports -Force).Count | Should -Be 0
    }
}

Describe 'Backing names that reach outside the pools' -Skip:(-not $hasQemuImg) {
    It '<Cmd> refuses an image with <Label> (<Image>)' -ForEach $cases {
        if ($Cmd -eq 'Get-Volume') {
            # A listing shows the image with its chain cut at the refused file, which it never reads.
            $before = Get-Surroundings
            $v = Get-Volume -Path "/var/lib/libvirt/images/$Image" -ErrorAction SilentlyContinue -ErrorVariable e
            "$($v | Format-List * | Out-String -Width 400) $e" | Should -Not -Match "$canary|$secret"
            if ($v) {
                $v.Chain.Count | Should -Be 1
                $v.BackingRefusal | Should -Not -BeNullOrEmpty
                $v.BackingPath | Should -Not -BeNullOrEmpty
            }
            else { "$($e[0].FullyQualifiedErrorId)" | Should -Match '^[A-Z][A-Za-z]+,KvmStorage' }
            Get-Surroundings | Should -Be $before
            return
        }
        Assert-Contained $Action -Arguments @("/var/lib/libvirt/images/$Image")
    }

    It 'lists the pool with every hostile chain cut, and no canary byte in it' {
        $all = @(Get-Volume -Pool default -ErrorAction SilentlyContinue)
        $out = $all | Format-List * | Out-String -Width 400
        $out | Should -Not -Match "$canary|$secret"
        foreach ($e in $escapes) { ($all | Where-Object Name -EQ $e.Image).BackingRefusal | Should -Not -BeNullOrEmpty -Because $e.Label }
    }

    It 'Import-Volume refuses a local image whose backing file is a raw file outside every pool' {
        $hostile = Join-Path $TestDrive ('import-' + [guid]::NewGuid().ToString('N').Substring(0, 6) + '.qcow2')
        Invoke-Qemu qemu-img create -q -f qcow2 -u -b (Join-Path $outside 'canary.raw') -F raw $hostile 1M
        try { Assert-Contained { Import-Volume -Path $hostile -Pool default -Name imported.qcow2 } -ErrorId 'BackingFileNotAllowed' }
        finally { Remove-Item -LiteralPath $hostile }
    }

    It 'leaves no file under the root holding a canary byte' {
        $hits = @(Get-ChildItem -LiteralPath $root -Recurse -File -Force | Where-Object { -not $_.LinkTarget } |
            Where-Object { Select-String -LiteralPath $_.FullName -Pattern $canary -SimpleMatch -Quiet })
        $hits.FullName | Should -BeNullOrEmpty
    }
}

Describe 'Merge-Volume into a base the chain names outside the pools' -Skip:(-not $hasQemuImg) {
    It 'refuses to write the chain-named base, and names the way to do it on purpose' {
        $base = Join-Path $root 'srv/other/base.qcow2'
        $hash = (Get-FileHash -LiteralPath $base).Hash
        { Merge-Volume -Volume /var/lib/libvirt/images/over-other.qcow2 -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'ChainFileNotWritable,*'
        (Get-FileHash -LiteralPath $base).Hash | Should -Be $hash
        try { Merge-Volume -Volume /var/lib/libvirt/images/over-other.qcow2 -Confirm:$false -ErrorAction Stop } catch { "$_" | Should -Match '-Base' }
    }

    It 'writes it when the user names it with -Base' {
        $base = Join-Path $root 'srv/other/base.qcow2'
        Merge-Volume -Volume /var/lib/libvirt/images/over-other.qcow2 -Base /srv/other/base.qcow2 -Confirm:$false
        $out = & qemu-io -c 'read -P 0x5a 0 64k' -f qcow2 $base 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$out"
        "$out" | Should -Not -Match 'Pattern verification failed'
    }
}

Describe 'Writes through a pool symlink that leads out of the pool' -Skip:(-not $hasQemuImg) {
    It '<Cmd> is refused and the outside file is unchanged' -ForEach $linkWriters {
        Assert-Contained $Action
        (Get-Item -LiteralPath (Join-Path $images 'out.qcow2')).LinkTarget | Should -Be (Join-Path $outside 'victim.qcow2')
        (Get-Item -LiteralPath (Join-Path $images 'out.raw')).LinkTarget | Should -Be (Join-Path $outside 'canary.raw')
    }
}

Describe 'A pool whose folder is a link out of the host root' -Skip:(-not $hasQemuImg) {
    It '<Cmd> is refused' -ForEach $poolEscapes {
        Assert-Contained $Action
        @(Get-ChildItem -LiteralPath (Join-Path $outside 'escape-folder') -Force).Name | Should -Be @('inside.qcow2')
    }
}

Describe 'Paths the user types' -Skip:(-not $hasQemuImg) {
    It '<Cmd> is refused' -ForEach $userPaths {
        Assert-Contained $Action -ErrorId $Id
    }

    It 'round-trips the host paths the module emits' {
        $v = Get-Volume -Pool default -Name good.qcow2
        $v.Path | Should -Be '/var/lib/libvirt/images/good.qcow2'
        (Get-Volume -Path $v.Path).Path | Should -Be $v.Path
        (Get-Volume -LiteralPath $v.LocalPath).Path | Should -Be $v.Path
        (Test-Volume -Volume $v.Path).Errors | Should -Be 0
        Push-Location $images
        try { (Get-Volume -LiteralPath ./good.qcow2).Path | Should -Be $v.Path } finally { Pop-Location }
        (Get-Volume -Path '/var/lib/libvirt/images/good.*').Path | Should -Be $v.Path
    }
}
