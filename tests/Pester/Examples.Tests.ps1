#Requires -Version 7.4
# The documentation runs as written. The README's tour runs line by line, in order, in one fresh pwsh on a
# sandbox host root that holds what a user of the tour would already have (VM kvm1, a golden image, some
# VMware disks, ...). Every help example of en-US/*.md runs the same way, one fresh pwsh per help file, on a
# standard sandbox host. The user's home and current folder are <root>/root, so '~' and './' are on the
# sandbox host as they are on a real one. A line either succeeds with no error record, or is refused with the
# error id the text announces, or is in a skip table below with the reason it cannot run here.

BeforeDiscovery {
    $repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path

    # The indented command lines of README.md's '## A tour', comment-only lines left out.
    $lines = Get-Content -LiteralPath (Join-Path $repo 'README.md')
    $start = [array]::IndexOf($lines, '## A tour')
    $script:tourSteps = @(
        for ($n = $start + 1; $start -ge 0 -and $n -lt $lines.Count -and $lines[$n] -notmatch '^## '; $n++) {
            if ($lines[$n] -match '^ {4}(\S.*)$' -and -not $Matches[1].StartsWith('#')) {
                @{ Code = $Matches[1].TrimEnd(); Line = $n + 1 }
            }
        }
    )

    # Each help file's examples: the title and the code of every ```powershell block under '## EXAMPLES'.
    $script:helpFiles = @(
        Get-ChildItem -LiteralPath (Join-Path $repo 'en-US') -Filter '*.md' | Sort-Object Name | ForEach-Object {
            $text = Get-Content -Raw -LiteralPath $_.FullName
            $from = $text.IndexOf('## EXAMPLES')
            $section = $text.Substring($from, $text.IndexOf('## PARAMETERS') - $from)
            $number = 0
            $examples = @(
                foreach ($m in [regex]::Matches($section, '(?ms)^### (?<title>[^\n]*)\n.*?^```powershell\s*\n(?<code>.*?)^```')) {
                    $number++
                    @{ Number = $number; Title = $m.Groups['title'].Value.Trim(); Code = $m.Groups['code'].Value.TrimEnd() }
                }
            )
            @{ Name = $_.BaseName; Examples = $examples }
        }
    )
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    $script:repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
    $script:kvm1Xml = Join-Path $repo 'examples/kvm1.xml'
    $script:runner = Join-Path $PSScriptRoot 'ExampleRunner.ps1'
    # What ExampleRunner types at a passphrase prompt: the passphrase of the sandbox's encrypted volumes.
    $script:examplePassphrase = 'example passphrase'

    # Tour lines that cannot run on a sandbox root, with the reason: exactly the lines the README marks with
    # '# needs libvirtd'. (Offline, -Start and the netfs and rbd definitions work: they only write files.)
    $script:tourSkips = [ordered]@{
        'Backup-VMDisk -VMName kvm1 -Pool backup -Incremental        # needs libvirtd and kvm1 running: changed clusters only, over the last backup' = 'an incremental backup comes from a running QEMU''s dirty bitmaps; kvm1 is shut off here (IncrementalBackupNeedsRunningVM)'
        'Get-VMDiskCheckpoint -VMName kvm1                           # needs libvirtd: the points incremental backups continue from' = 'libvirtd keeps the checkpoints (LibvirtDaemonRequired offline)'
        'Merge-Volume -Volume (Get-Volume default kvm1-pre-upgrade.qcow2) -RemoveOverlay   # needs libvirtd and kvm1 running: fold it back live (block commit)' = 'the live merge is libvirtd''s block commit; offline, -RemoveOverlay of a disk kvm1 uses is refused (VolumeAttachedToVM)'
    }

    # Tour lines whose comment says they are refused: they must fail with this error id and nothing else.
    $script:tourRefusals = [ordered]@{
        'Remove-Volume -Pool default -Name golden.qcow2      # refused (VolumeAttachedToVM): VMs web1..3 read it through their clones' = 'VolumeAttachedToVM'
        'Merge-Volume -Volume (Get-Volume default web1.qcow2)   # refused (BackingFileShared): web2 reads that base too; -Force changes it for both' = 'BackingFileShared'
    }

    # Help examples that cannot run on a sandbox root ('<file> <number>'), with the reason.
    $script:helpSkips = [ordered]@{
        'Connect-LibvirtHost 1'    = 'connects to a running libvirtd (qemu:///system); Connect-LibvirtHost has no offline mode'
        'Connect-LibvirtHost 2'    = 'connects over the network to a remote host and asks for a password (Get-Credential)'
        'Get-LibvirtHost 2'        = 'needs at least one open libvirt connection (a running libvirtd)'
        'Disconnect-LibvirtHost 1' = 'closes the default connection: needs one open (a running libvirtd); offline it reports ConnectionNotFound'
        'Start-StoragePool 1'  = 'starting a pool is libvirtd''s job: offline it is refused with LibvirtDaemonRequired'
        'Start-StoragePool 2'  = 'starting a pool is libvirtd''s job: offline it is refused with LibvirtDaemonRequired'
        'Stop-StoragePool 1'   = 'stopping a pool is libvirtd''s job: offline it is refused with LibvirtDaemonRequired'
        'Get-StoragePool 4'    = 'reads a host image mounted at /mnt/hostimage, a real mount outside the sandbox'
        'Backup-VMDisk 3'           = 'backs up a running VM through libvirtd''s backup job, incrementally over its checkpoint: needs a running libvirtd and VM (offline: LibvirtDaemonRequired, and -Incremental of a shut-off VM is IncrementalBackupNeedsRunningVM)'
        'Move-VMDisk 3'             = 'moves the disk of a running VM by libvirt''s block copy: needs a running libvirtd and VM (Connect-LibvirtHost has no offline mode)'
        'New-VMDiskSnapshot 2'      = 'snapshots a running VM and merges its overlay back live (block commit): needs a running libvirtd and VM; offline the merge of an attached overlay is refused'
        'Merge-Volume 5'            = 'merges a running VM''s active overlay by libvirt''s block commit: needs a running libvirtd and VM (offline: VolumeInUseByRunningVM)'
        'Get-VMDiskCheckpoint 1'    = 'checkpoints are libvirt''s: needs a running libvirtd (offline: LibvirtDaemonRequired)'
        'Get-VMDiskCheckpoint 2'    = 'checkpoints are libvirt''s: needs a running libvirtd (offline: LibvirtDaemonRequired)'
        'Remove-VMDiskCheckpoint 1' = 'checkpoints are libvirt''s: needs a running libvirtd (offline: LibvirtDaemonRequired)'
        'Remove-VMDiskCheckpoint 2' = 'checkpoints are libvirt''s: needs a running libvirtd (offline: LibvirtDaemonRequired)'
        'Remove-VMDiskCheckpoint 3' = 'checkpoints are libvirt''s: needs a running libvirtd (offline: LibvirtDaemonRequired)'
    }

    # Help examples that fail because of a module bug (not the text): reported, and skipped so the suite stays green.
    $script:knownBugs = [ordered]@{}

    function Invoke-ExampleChild {
        <# Runs steps in a fresh pwsh on a sandbox root, home and current folder <root>/root; returns the results by Id. #>
        param([string] $Root, [object[]] $Steps, [switch] $Isolated)
        $stepFile = Join-Path $Root 'tmp/steps.json'
        $resultFile = Join-Path $Root 'tmp/results.json'
        ConvertTo-Json -InputObject @($Steps) -Depth 3 | Set-Content -LiteralPath $stepFile
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        $psi = [Diagnostics.ProcessStartInfo]::new($exe)
        if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $psi.ArgumentList.Add($first) }
        foreach ($a in '-NoProfile', '-NonInteractive', '-File', $runner, '-ModulePath', $env:KVMSTORAGE_TEST_MODULE, '-StepFile', $stepFile, '-ResultFile', $resultFile) {
            $psi.ArgumentList.Add($a)
        }
        if ($Isolated) { $psi.ArgumentList.Add('-Isolated') }
        $psi.WorkingDirectory = Join-Path $Root 'root'
        $psi.Environment['KVMSTORAGE_ROOT'] = $Root
        $psi.Environment['HOME'] = Join-Path $Root 'root'
        $psi.Environment['TMPDIR'] = Join-Path $Root 'tmp'
        $psi.Environment['KVMSTORAGE_EXAMPLE_PASSPHRASE'] = $examplePassphrase
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
        $p = [Diagnostics.Process]::Start($psi)
        $out = $p.StandardOutput.ReadToEndAsync()
        $err = $p.StandardError.ReadToEndAsync()
        $p.WaitForExit(300000) | Should -BeTrue
        $p.ExitCode | Should -Be 0 -Because "the runner failed: $($out.Result) $($err.Result)"
        $results = @{}
        foreach ($r in @(Get-Content -Raw -LiteralPath $resultFile | ConvertFrom-Json)) { $results[$r.Id] = $r }
        $results
    }

    function New-SandboxRoot {
        <# An empty host root with the user's home (/root) and a temporary folder (/tmp). #>
        $root = Join-Path $TestDrive ('ex-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory -Path $root, (Join-Path $root 'root'), (Join-Path $root 'tmp') | Out-Null
        $root
    }

    function Invoke-QemuImg {
        $out = & qemu-img @args 2>&1
        if ($LASTEXITCODE) { throw "qemu-img $args failed: $out" }
    }

    function New-Image {
        <# An image at a local path (parent folders made), with qemu-img. #>
        param([string] $Path, [string] $Format = 'qcow2', [string] $Size = '64M', [string] $Backing, [string[]] $Option)
        New-Item -ItemType Directory -Force -Path (Split-Path $Path) | Out-Null
        $a = @('create', '-q', '-f', $Format)
        # A host records its own paths; an image in the same folder, by its name (as qemu-img create -b name).
        if ($Backing) { $a += '-b', $Backing, '-F', $(if ($Backing -like '*.raw' -or $Backing -like '*.img') { 'raw' } else { 'qcow2' }) }
        foreach ($o in $Option) { $a += '-o', $o }
        $a += $Path
        if (-not $Backing) { $a += $Size }
        Invoke-QemuImg @a
    }

    function Write-ImageData {
        <# Guest data, so that images are not all empty. #>
        param([string] $Path, [string] $Format = 'qcow2', [int] $Pattern = 0x5a)
        $out = & qemu-io -f $Format -c "write -P $Pattern 0 1M" $Path 2>&1
        if ($LASTEXITCODE) { throw "qemu-io failed on ${Path}: $out" }
    }

    function Set-QcowDirty {
        <# Sets the dirty bit a lazy-refcount writer leaves when it is killed (qcow2 spec: incompatible feature bit 0). #>
        param([string] $Path)
        $f = [IO.File]::Open($Path, 'Open', 'ReadWrite')
        try { $f.Position = 79; $b = $f.ReadByte(); $f.Position = 79; $f.WriteByte($b -bor 1) } finally { $f.Dispose() }
    }

    function Set-QcowRefcountOfL1Zero {
        <# Damages a qcow2 image: the refcount of its L1 table's cluster becomes 0 (qemu-img check: 1 error). #>
        param([string] $Path)
        $bytes = [IO.File]::ReadAllBytes($Path)
        function Get-Be64([int] $at) { $v = [uint64]0; for ($i = 0; $i -lt 8; $i++) { $v = ($v -shl 8) -bor $bytes[$at + $i] }; $v }
        $clusterBits = [int]$bytes[23]
        $l1 = Get-Be64 40
        $refcountTable = Get-Be64 48
        $block = Get-Be64 $refcountTable
        $at = [int]$block + 2 * [int]($l1 -shr $clusterBits)
        $f = [IO.File]::Open($Path, 'Open', 'ReadWrite')
        try { $f.Position = $at; $f.Write([byte[]](0, 0), 0, 2) } finally { $f.Dispose() }
    }

    function Add-Domain {
        <# A shut-off VM defined as libvirt keeps it (mode 0600): examples/kvm1.xml under another name and UUID. #>
        param([string] $Root, [string] $Name)
        $folder = Join-Path $Root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force -Path $folder | Out-Null
        $xml = Get-Content -Raw -LiteralPath $kvm1Xml
        if ($Name -ne 'kvm1') {
            $xml = $xml.Replace('<name>kvm1</name>', "<name>$Name</name>").Replace('0ba67224-dbe2-4371-9d22-21cc5243500d', [guid]::NewGuid().ToString())
            $xml = $xml.Replace('virsh edit kvm1', "virsh edit $Name")
        }
        $file = Join-Path $folder "$Name.xml"
        Set-Content -LiteralPath $file -Value $xml -NoNewline
        [IO.File]::SetUnixFileMode($file, [IO.UnixFileMode]'UserRead, UserWrite')
    }

    function Initialize-TourHost {
        <#
        What a user of the tour has before the first line: VMs kvm1 and web1..web3 (shut off), in the folder that
        becomes the pool default a golden image and its successor, an old image, an image left dirty by a crash,
        a qcow2 image with its raw copy, an overlay whose base only it uses and an ISO; VMware disks at the host
        path /srv/images and in the home folder.
        #>
        param([string] $Root)
        foreach ($vm in 'kvm1', 'web1', 'web2', 'web3') { Add-Domain $Root $vm }
        $images = Join-Path $Root 'var/lib/libvirt/images'
        New-Image "$images/golden.qcow2"; Write-ImageData "$images/golden.qcow2"
        New-Image "$images/golden-2027.qcow2"; Write-ImageData "$images/golden-2027.qcow2" -Pattern 0x5b
        New-Image "$images/old.qcow2"
        New-Image "$images/crashed.qcow2" -Option 'lazy_refcounts=on'; Write-ImageData "$images/crashed.qcow2"; Set-QcowDirty "$images/crashed.qcow2"
        New-Image "$images/a.qcow2"; Write-ImageData "$images/a.qcow2"
        Invoke-QemuImg convert -f qcow2 -O raw "$images/a.qcow2" "$images/a.img"
        New-Image "$images/test-base.qcow2"; Write-ImageData "$images/test-base.qcow2"
        New-Image "$images/test.qcow2" -Backing "test-base.qcow2"; Write-ImageData "$images/test.qcow2" -Pattern 0x11
        New-Image "$images/debian-12.iso" -Format raw -Size 4M
        New-Image "$Root/srv/images/appliance.vmdk" -Format vmdk
        New-Image "$Root/root/vmware/legacy.vmdk" -Format vmdk; Write-ImageData "$Root/root/vmware/legacy.vmdk" -Format vmdk
        Get-ChildItem -LiteralPath $images -File | ForEach-Object { [IO.File]::SetUnixFileMode($_.FullName, [IO.UnixFileMode]'UserRead, UserWrite') }
    }

    function Initialize-HelpHost {
        <#
        The standard host of the help examples: pools default (/var/lib/libvirt/images), images (/srv/images) and a
        few more for the wildcard examples; in default a golden image with linked clones, overlays, raw images, ISOs
        and the volumes the examples name; VMs kvm1 (vda, vdb, vdc, cdroms sda and sdb) and web01 (vda: the overlay web01-upgrade.qcow2); in the
        home folder (the current folder) loose images.
        #>
        param([string] $Root)
        $saved = $env:KVMSTORAGE_ROOT
        $env:KVMSTORAGE_ROOT = $Root
        try {
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build -Autostart | Out-Null
            New-StoragePool -Name images -Path /srv/images -Build | Out-Null
            foreach ($p in 'scratch', 'old-images', 'test1', 'test2', 'vm-store', 'iso-store', 'gone') {
                New-StoragePool -Name $p -Path "/srv/$p" -Build -Autostart:($p -in 'test1', 'vm-store') | Out-Null
            }
            Remove-Item -LiteralPath (Join-Path $Root 'srv/gone') -Recurse -Force

            $images = Join-Path $Root 'var/lib/libvirt/images'
            New-Image "$images/golden.qcow2"; Write-ImageData "$images/golden.qcow2"
            New-Image "$images/golden-2027.qcow2"; Write-ImageData "$images/golden-2027.qcow2" -Pattern 0x5b
            foreach ($clone in 'web01', 'web02', 'clone1', 'clone2') { New-Image "$images/$clone.qcow2" -Backing "golden.qcow2" }
            New-Image "$images/web01-upgrade.qcow2" -Backing "web01.qcow2"; Write-ImageData "$images/web01-upgrade.qcow2" -Pattern 0x22
            New-Image "$images/build-base.qcow2"; New-Image "$images/build.qcow2" -Backing "build-base.qcow2"; Write-ImageData "$images/build.qcow2"
            New-Image "$images/base.raw" -Format raw
            New-Image "$images/mid.qcow2" -Backing "base.raw"
            New-Image "$images/top.qcow2" -Backing "mid.qcow2"; Write-ImageData "$images/top.qcow2"
            foreach ($q in 'base', 'web', 'db', 'kvm1', 'kvm1-scratch', 'old-test', 'scratch-1', 'scratch-2') { New-Image "$images/$q.qcow2" }
            New-Image "$images/vm1.qcow2" -Option 'lazy_refcounts=on'; Write-ImageData "$images/vm1.qcow2"
            foreach ($r in 'disk', 'old', 'data', 'db', 'kvm1-swap') { New-Image "$images/$r.img" -Format raw }
            New-Image "$images/scratch.img" -Format raw -Size 4G
            foreach ($iso in 'debian-11', 'debian-12', 'debian-12.1') { New-Image "$images/$iso.iso" -Format raw -Size 4M }
            Get-ChildItem -LiteralPath $images -File | ForEach-Object { [IO.File]::SetUnixFileMode($_.FullName, [IO.UnixFileMode]'UserRead, UserWrite') }

            # Encrypted volumes, all under the passphrase ExampleRunner types at the prompt; old-secure.qcow2 has its secret.
            $pw = ConvertTo-SecureString $examplePassphrase -AsPlainText -Force
            foreach ($e in 'secure.qcow2', 'old-secure.qcow2', 'vault.qcow2', 'db.luks') { New-Volume -Pool default -Name $e -Size 16MB -Encrypt -Passphrase $pw -IterationTime 10 | Out-Null }
            New-VolumeSecret -Volume /var/lib/libvirt/images/old-secure.qcow2 -Passphrase $pw | Out-Null

            Add-Domain $Root 'kvm1'
            Add-Domain $Root 'web01'
            Add-VMDisk -VMName kvm1 -Pool default -Name kvm1.qcow2 | Out-Null
            Add-VMDisk -VMName kvm1 -Pool default -Name kvm1-swap.img | Out-Null
            Add-VMDisk -VMName kvm1 -Pool default -Name kvm1-scratch.qcow2 | Out-Null
            Add-VMDisk -VMName kvm1 -Pool default -Name debian-11.iso -Device cdrom | Out-Null
            # web01 is being upgraded on an overlay (Merge-Volume's first example folds it back).
            Add-VMDisk -VMName web01 -Pool default -Name web01-upgrade.qcow2 | Out-Null
        }
        finally { $env:KVMSTORAGE_ROOT = $saved }

        $home_ = Join-Path $Root 'root'
        New-Image "$home_/disk.qcow2"; Write-ImageData "$home_/disk.qcow2"
        foreach ($s in 'clean-install', 'before-update', 'after-update') { Invoke-QemuImg snapshot -c $s "$home_/disk.qcow2" }
        Invoke-QemuImg convert -f qcow2 -O raw "$home_/disk.qcow2" "$home_/disk.img"
        New-Image "$home_/a.qcow2"; New-Image "$home_/b.qcow2" -Size 128M
        New-Image "$home_/appliance.qcow2"; Write-ImageData "$home_/appliance.qcow2"
        New-Image "$home_/broken.qcow2"; Set-QcowRefcountOfL1Zero "$home_/broken.qcow2"
        New-Image "$home_/win10.vdi" -Format vdi; Write-ImageData "$home_/win10.vdi" -Format vdi
        New-Image "$home_/exports/app.vmdk" -Format vmdk
        New-Item -ItemType Directory -Path "$home_/backup" | Out-Null
    }

    # What some help files need beyond the standard host, run with the sandbox as the session's root.
    $script:helpExtras = @{
        'Test-Volume'            = { Set-QcowDirty (Join-Path $env:KVMSTORAGE_ROOT 'var/lib/libvirt/images/vm1.qcow2') }
        'Convert-Volume'         = { New-StoragePool -Name backup -Path /srv/backup -Build | Out-Null }
        'Compare-Volume'         = { Convert-Volume -Volume /var/lib/libvirt/images/data.img -Format qcow2 -Name data-secure.qcow2 -Encrypt -Passphrase (ConvertTo-SecureString $examplePassphrase -AsPlainText -Force) -IterationTime 10 | Out-Null }
        'Get-VolumeSecret'       = { New-VolumeSecret -Volume /var/lib/libvirt/images/secure.qcow2 -Passphrase (ConvertTo-SecureString $examplePassphrase -AsPlainText -Force) -Uuid 6f1c1b9e-2d4b-4c1e-9a51-3c8f0e7d2a10 | Out-Null }
        'Remove-VolumeSecret'    = { New-VolumeSecret -Volume /var/lib/libvirt/images/db.luks -Passphrase (ConvertTo-SecureString $examplePassphrase -AsPlainText -Force) -Uuid 6f1c1b9e-2d4b-4c1e-9a51-3c8f0e7d2a10 | Out-Null }
        'Resize-Volume'          = { New-Volume -Pool default -Name kvm1.img -Size 8GB -Format raw | Out-Null }
        'Restore-VolumeSnapshot' = { New-VolumeSnapshot -Volume (Get-Volume default web01.qcow2) -Name before-upgrade | Out-Null }
        'Remove-VolumeSnapshot'  = { New-VolumeSnapshot -Volume (Get-Volume default web01.qcow2) -Name before-upgrade | Out-Null }
        # What the backups of a running web01 (Example 3) leave in the pool images: a full backup and the next night's
        # incremental one over it, for the restore of Example 4.
        'Backup-VMDisk'          = {
            $full = Copy-Volume -Volume (Get-Volume default web01-upgrade.qcow2) -Pool images -Name web01-full.qcow2
            New-Volume -Pool images -Name web01-20261207-020000-vda.qcow2 -BackingVolume $full -RelativeBackingPath | Out-Null
            Write-ImageData (Join-Path $env:KVMSTORAGE_ROOT 'srv/images/web01-20261207-020000-vda.qcow2') -Pattern 0x33
        }
        'Set-Volume'             = {
            $target = Join-Path $env:KVMSTORAGE_ROOT 'srv/golden'
            New-Item -ItemType Directory -Path $target | Out-Null
            Copy-Item -LiteralPath (Join-Path $env:KVMSTORAGE_ROOT 'var/lib/libvirt/images/golden.qcow2') -Destination $target
        }
    }
    $script:helpEmpty = 'New-StoragePool'
    # Built here, at the file's level: what a block puts in TestDrive is removed when the block ends.
    $script:helpTemplate = New-SandboxRoot
    Initialize-HelpHost $helpTemplate

    function Copy-HelpHost {
        <# The standard host into an empty sandbox root: built once, then copied (sparse files stay sparse; every path
           in the definitions and images is the host's own or relative, so a copy is the same host). #>
        param([string] $Root)
        $out = & cp -a --sparse=always "$helpTemplate/." "$Root/" 2>&1
        if ($LASTEXITCODE) { throw "cp failed: $out" }
    }

    # This machine's own libvirt and image folders: a documented line that escapes the sandbox shows up here.
    function Get-RealHostListing {
        foreach ($d in '/var/lib/libvirt/images', '/etc/libvirt/storage', '/etc/libvirt/qemu', '/srv', '/mnt/hostimage', '/mnt/vmware', '/backup', '/tmp/kvm-sandbox') {
            if (Test-Path -LiteralPath $d) { Get-ChildItem -LiteralPath $d -Recurse -Depth 1 -Force -ErrorAction SilentlyContinue | ForEach-Object { "$($_.FullName)|$($_.LastWriteTimeUtc.Ticks)" } }
        }
    }
    $script:realHostBefore = @(Get-RealHostListing)

    function Assert-StepResult {
        param($Result, [string] $Code, [string] $ExpectedErrorId)
        $Result | Should -Not -BeNullOrEmpty -Because 'the runner records every step'
        $Result.Ran | Should -BeTrue
        $errors = @($Result.Errors)
        if ($ExpectedErrorId) {
            $errors.Count | Should -BeGreaterThan 0 -Because "the text says '$Code' is refused"
            foreach ($e in $errors) { $e | Should -BeLike "*$ExpectedErrorId*" -Because "'$Code' should be refused with $ExpectedErrorId only" }
        }
        else {
            $errors | Should -BeNullOrEmpty -Because "'$Code' wrote errors. Output:`n$($Result.Output)"
        }
    }
}

Describe 'The README tour' -ForEach @(@{ AllSteps = $tourSteps }) {
    BeforeAll {
        $script:tourRoot = New-SandboxRoot
        Initialize-TourHost $tourRoot
        $steps = @(for ($i = 0; $i -lt $AllSteps.Count; $i++) {
                [pscustomobject]@{ Id = "$i"; Code = $AllSteps[$i].Code; Skip = $tourSkips.Contains($AllSteps[$i].Code) }
            })
        $script:tourResults = Invoke-ExampleChild -Root $tourRoot -Steps $steps
        $script:tourIndex = @{}
        for ($i = 0; $i -lt $AllSteps.Count; $i++) { $tourIndex[$AllSteps[$i].Code] = "$i" }
    }

    It 'has the commands of the tour (43 or more)' {
        $AllSteps.Count | Should -BeGreaterOrEqual 43
    }

    It 'skips exactly the lines the README marks as needing libvirtd' {
        $marked = @($AllSteps.Code | Where-Object { $_ -match '#.*needs libvirtd' })
        @($tourSkips.Keys) | Should -Be $marked
    }

    It 'names in its refusal list only lines of the tour' {
        foreach ($k in $tourRefusals.Keys) { $tourIndex.ContainsKey($k) | Should -BeTrue -Because "'$k' should be a tour line" }
    }

    It 'line <Line>: <Code>' -ForEach $tourSteps {
        if ($tourSkips.Contains($Code)) { Set-ItResult -Skipped -Because $tourSkips[$Code]; return }
        if ($knownBugs.Contains("tour $Code")) { Set-ItResult -Skipped -Because $knownBugs["tour $Code"]; return }
        Assert-StepResult $tourResults[$tourIndex[$Code]] $Code $tourRefusals[$Code]
    }
}

Describe 'Examples in <Name>' -ForEach $helpFiles {
    BeforeAll {
        $script:fileName = $Name
        $script:exampleRoot = New-SandboxRoot
        if ($Name -notin $helpEmpty) { Copy-HelpHost $exampleRoot }
        if ($helpExtras.ContainsKey($Name)) {
            $saved = $env:KVMSTORAGE_ROOT
            $env:KVMSTORAGE_ROOT = $exampleRoot
            try { & $helpExtras[$Name] } finally { $env:KVMSTORAGE_ROOT = $saved }
        }
        $steps = @(foreach ($e in $Examples) {
                [pscustomobject]@{ Id = "$($e.Number)"; Code = $e.Code; Skip = $helpSkips.Contains("$Name $($e.Number)") }
            })
        # A file whose every example is skipped needs no child.
        $script:exampleResults = if (@($steps | Where-Object { -not $_.Skip })) { Invoke-ExampleChild -Root $exampleRoot -Steps $steps -Isolated } else { @{} }
    }

    It 'Example <Number>: <Title>' -ForEach $Examples {
        $key = "$fileName $Number"
        if ($helpSkips.Contains($key)) { Set-ItResult -Skipped -Because $helpSkips[$key]; return }
        if ($knownBugs.Contains($key)) { Set-ItResult -Skipped -Because $knownBugs[$key]; return }
        Assert-StepResult $exampleResults["$Number"] $Code
    }
}

Describe 'The skip tables' {
    It 'name only help examples that exist' -ForEach @(@{ Files = $helpFiles }) {
        $names = @($Files | ForEach-Object { $f = $_; $f.Examples | ForEach-Object { "$($f.Name) $($_.Number)" } })
        foreach ($k in @($helpSkips.Keys) + @($knownBugs.Keys | Where-Object { $_ -notlike 'tour *' })) { $k | Should -BeIn $names }
    }
}

Describe 'This machine outside the sandboxes' {
    It 'is left as it was: no documented line escaped its sandbox root' {
        @(Get-RealHostListing) | Should -Be $realHostBefore
    }
}
