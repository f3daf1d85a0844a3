using System.Management.Automation;
using KvmStorage.Core.Domains;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>Set-VMDisk: changes the settings of an attached disk, or the medium of a cdrom drive.</summary>
[Cmdlet(VerbsCommon.Set, "VMDisk", SupportsShouldProcess = true, DefaultParameterSetName = ByTarget)]
[OutputType(typeof(Core.Domains.VMDisk))]
public sealed class SetVMDiskCommand : KvmCmdlet
{
    private const string ByTarget = "ByTarget";
    private const string ByObject = "ByObject";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByTarget)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The disk's target, such as vdb or sda.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByTarget)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string Target { get; set; } = string.Empty;

    /// <summary>The disk as Get-VMDisk emits it.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Domains.VMDisk InputObject { get; set; } = null!;

    /// <summary>Host cache mode; an empty string removes the setting.</summary>
    [Parameter]
    [ValidateSet("", "default", "none", "writethrough", "writeback", "directsync", "unsafe")]
    public string? Cache { get; set; }

    /// <summary>I/O mode; an empty string removes the setting.</summary>
    [Parameter]
    [ValidateSet("", "threads", "native", "io_uring")]
    public string? Io { get; set; }

    /// <summary>Discard mode; an empty string removes the setting.</summary>
    [Parameter]
    [ValidateSet("", "unmap", "ignore")]
    public string? Discard { get; set; }

    [Parameter]
    public bool ReadOnly { get; set; }

    [Parameter]
    public bool Shareable { get; set; }

    /// <summary>Serial number the guest sees; an empty string removes it.</summary>
    [Parameter]
    public string? Serial { get; set; }

    /// <summary>Per-device boot order; 0 removes it.</summary>
    [Parameter]
    [ValidateRange(0, 10000)]
    public int BootOrder { get; set; }

    /// <summary>New medium for a cdrom or floppy drive (an .iso or image file).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    /// <summary>Remove the medium from a cdrom or floppy drive.</summary>
    [Parameter]
    public SwitchParameter Eject { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Change the running VM (hot-plug); with -Config too, both. Needs a libvirt connection and a running VM.</summary>
    [Parameter]
    public SwitchParameter Live { get; set; }

    /// <summary>Change the persistent definition only (a running VM sees it at its next start).</summary>
    [Parameter]
    public SwitchParameter Config { get; set; }

    protected override void ProcessRecord()
    {
        string vm = InputObject?.VMName ?? VMName;
        string target = InputObject?.Target ?? Target;
        RunForItem($"{vm}:{target}", () =>
        {
            bool Bound(string name) => MyInvocation.BoundParameters.ContainsKey(name);
            if (Path is not null && Eject)
            {
                throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, DomainErrorIds.InvalidDiskOption, "Give either -Path or -Eject, not both.", target);
            }

            var update = new DiskUpdate
            {
                Settings = new DiskSettings
                {
                    Cache = Cache,
                    Io = Io,
                    Discard = Discard,
                    ReadOnly = Bound(nameof(ReadOnly)) ? ReadOnly : null,
                    Shareable = Bound(nameof(Shareable)) ? Shareable : null,
                    Serial = Serial,
                    BootOrder = Bound(nameof(BootOrder)) ? BootOrder : null,
                },
            };
            bool settings = !update.Settings.IsEmpty;
            bool media = Path is not null || Eject;
            var attachments = new DiskAttachments(KvmHost);
            if (!attachments.GetDisks(vm).Any(d => d.Target == target))
            {
                throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"VM '{vm}' has no disk '{target}'.", target);
            }

            Core.Domains.VMDisk? result = null;
            if (!settings && !media)
            {
                WriteVerbose($"Nothing to change for {vm}:{target}.");
            }
            else if (ShouldProcess($"{vm}:{target}", media ? (Eject ? "Eject the medium" : $"Insert {Path}") : "Change disk settings"))
            {
                if (media)
                {
                    result = attachments.ChangeMedia(vm, target, Path is null ? null : Volumes.Locator.File(SpecOfPath(Path)), DeviceScopes.From(Live, Config));
                }

                if (settings)
                {
                    result = attachments.Update(vm, target, update, DeviceScopes.From(Live, Config));
                }

                WarnIfActive(vm, DeviceScopes.From(Live, Config));
            }

            if (PassThru)
            {
                WriteObject(result ?? attachments.GetDisks(vm).First(d => d.Target == target));
            }
        });
    }
}
