using System.Management.Automation;
using KvmStorage.Core.Domains;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>Remove-VMDisk: detaches a disk from a VM's definition, optionally deleting its image.</summary>
[Cmdlet(VerbsCommon.Remove, "VMDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = ByTarget)]
[OutputType(typeof(void))]
public sealed class RemoveVMDiskCommand : KvmCmdlet
{
    private const string ByTarget = "ByTarget";
    private const string ByVolume = "ByVolume";
    private const string ByObject = "ByObject";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByTarget)]
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByVolume)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The disk's target, such as vdb.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByTarget)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string Target { get; set; } = string.Empty;

    /// <summary>Detach every disk of the VM that uses this image.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByVolume, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>The disk as Get-VMDisk emits it.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Domains.VMDisk InputObject { get; set; } = null!;

    /// <summary>Also delete the image file when no other VM uses it and no other image is backed by it.</summary>
    [Parameter]
    public SwitchParameter DeleteVolume { get; set; }

    /// <summary>Change the running VM (hot-plug); with -Config too, both. Needs a libvirt connection and a running VM.</summary>
    [Parameter]
    public SwitchParameter Live { get; set; }

    /// <summary>Change the persistent definition only (a running VM sees it at its next start).</summary>
    [Parameter]
    public SwitchParameter Config { get; set; }

    /// <summary>Seconds to wait for the guest to release a hot-unplugged disk (default 10).</summary>
    [Parameter]
    [ValidateRange(0, 3600)]
    public int Timeout { get; set; } = 10;

    protected override void ProcessRecord()
    {
        string vm = InputObject?.VMName ?? VMName;
        RunForItem(vm, () =>
        {
            var attachments = new DiskAttachments(KvmHost);
            // The persistent and the running VM's disks: one hot-plugged with -Live is in the running VM only.
            IReadOnlyList<Core.Domains.VMDisk> disks = attachments.GetDisks(vm);
            List<Core.Domains.VMDisk> selected;
            if (ParameterSetName == ByVolume)
            {
                string hostPath = ResolveVolume(Volume).Path;
                selected = disks.Where(d => d.Source == hostPath).ToList();
                if (selected.Count == 0)
                {
                    throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"VM '{vm}' has no disk using '{hostPath}'.", hostPath);
                }
            }
            else
            {
                string target = InputObject?.Target ?? Target;
                selected = disks.Where(d => d.Target == target).ToList();
                if (selected.Count == 0)
                {
                    throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"VM '{vm}' has no disk '{target}'.", target);
                }
            }

            // A target whose source differs between the two definitions is listed twice; one detach takes both.
            foreach (Core.Domains.VMDisk disk in selected.DistinctBy(d => d.Target))
            {
                // Whether the image can be deleted is decided before anything is asked or detached, so -WhatIf and
                // -Confirm say what the run will do: a disk whose image another VM or image uses is detached, and
                // the image is kept (with the reason reported as an error).
                Core.Errors.KvmStorageException? keep = null;
                if (DeleteVolume && disk.Volume is { Pool: not null } doomed)
                {
                    try
                    {
                        Core.Volumes.VolumeRemoval.EnsureRemovable(KvmHost, doomed, force: false, detachingFrom: vm);
                    }
                    catch (Core.Errors.KvmStorageException e)
                    {
                        keep = e;
                    }
                }

                string action = (DeleteVolume.IsPresent, disk.Source, keep) switch
                {
                    (true, not null, null) when disk.Volume?.Pool is not null => $"Detach the disk and delete its image {disk.Source}",
                    (true, not null, { } why) => $"Detach the disk; its image is kept ({why.Message})",
                    (true, not null, _) => $"Detach the disk; its image is kept ('{disk.Source}' is not a volume of a storage pool)",
                    _ => "Detach the disk (the image is kept)",
                };
                // Detaching keeps the image and is undone by Add-VMDisk (Medium); deleting the image is not (High).
                bool deletes = DeleteVolume.IsPresent && keep is null && disk.Source is not null && disk.Volume?.Pool is not null;
                if (!ShouldProcess($"{vm}:{disk.Target} ({disk.Source ?? "empty"})", action, deletes ? ConfirmImpact.High : ConfirmImpact.Medium))
                {
                    continue;
                }

                attachments.Detach(vm, disk.Target, DeviceScopes.From(Live, Config), TimeSpan.FromSeconds(Timeout));
                WarnIfActive(vm, DeviceScopes.From(Live, Config));
                if (keep is not null)
                {
                    WriteError(keep, disk.Volume!.Name);
                }
                else if (DeleteVolume && disk.Volume is { Pool: not null } volume)
                {
                    RunForItem(volume.Name, () => KvmHost.RemoveVolume(volume.Pool!, volume.Name, force: false));
                }
                else if (DeleteVolume && disk.Source is not null)
                {
                    WriteWarning($"'{disk.Source}' is not a volume of a storage pool; it was detached but not deleted.");
                }
            }
        });
    }
}
